"""What users install: the sdist and wheel built from this tree, the wheel installed into a
fresh venv outside the repository, and the INSTALLED ``dicombridge`` started: ``--version``,
headless fed by DCMTK ``storescu``, and its UI in a real terminal (a tmux pane at 80×24).

The fresh venv gets its dependencies the way a user's ``pip install`` does (pip resolves them
from the configured package index), constrained to the versions this test run uses so that a
new release elsewhere cannot make the result depend on the day; that checks the wheel's
dependency metadata too. Reusing this venv's site-packages instead would hide a missing
dependency, and ``--system-site-packages`` would see the base interpreter's packages, not this
venv's. pip's cache keeps the install to a few seconds after the first run.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import tarfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

import bridge

from .conftest import free_port, write_config
from .peers import run_storescu, system_tool
from .studies import make_study
from .test_headless import HeadlessBridge

ROOT = Path(__file__).resolve().parent.parent
NOT_SOURCES = shutil.ignore_patterns(".venv", ".git", "build", "dist", "*.egg-info", "__pycache__", ".hypothesis",
                                     ".pytest_cache", ".mypy_cache", ".ruff_cache", "results")
CLEAN_ENV = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}


def run(*command: str | Path, cwd: Path | None = None, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(c) for c in command], capture_output=True, text=True, timeout=timeout, cwd=cwd,
                            env=CLEAN_ENV)
    assert result.returncode == 0, f"{command} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
    return result


@dataclass
class Installed:
    sdist: Path
    wheel: Path
    venv: Path
    outside: Path  # a working folder outside the repository

    @property
    def command(self) -> Path:
        return self.venv / "bin" / "dicombridge"

    def package_folder(self, name: str) -> Path:
        code = f"import {name}, os; print(os.path.dirname({name}.__file__))"
        return Path(run(self.venv / "bin" / "python", "-c", code, cwd=self.outside).stdout.strip())


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Installed:
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"  # building writes build/ and *.egg-info next to the sources: not into the repo
    shutil.copytree(ROOT, source, ignore=NOT_SOURCES)
    run(sys.executable, "-m", "build", "--no-isolation", "--outdir", work / "dist", source)  # sdist, then wheel from it
    (sdist,) = (work / "dist").glob("*.tar.gz")
    (wheel,) = (work / "dist").glob("*.whl")
    constraints = work / "constraints.txt"
    frozen = run(sys.executable, "-m", "pip", "freeze", "--exclude-editable").stdout
    constraints.write_text("".join(line + "\n" for line in frozen.splitlines()
                                   if not line.lower().startswith("dicombridge")))
    venv = work / "venv"
    run(sys.executable, "-m", "venv", venv)
    run(venv / "bin" / "python", "-m", "pip", "install", "-q", "-c", constraints, wheel)
    outside = work / "elsewhere"
    outside.mkdir()
    return Installed(sdist, wheel, venv, outside)


def test_the_sdist_and_the_wheel_hold_everything_read_at_run_time_and_by_the_tests(installed):
    with zipfile.ZipFile(installed.wheel) as archive:
        in_wheel = set(archive.namelist())
    assert {"tui/app.tcss", "bridge/cli.py"} <= in_wheel
    assert any(name.endswith(".dist-info/licenses/LICENSE") for name in in_wheel)
    with tarfile.open(installed.sdist) as archive:
        in_sdist = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    needed = {"LICENSE", "README.md", "pyproject.toml", "tui/app.tcss", "tests/__init__.py", "tests/conftest.py",
              "tests/peers.py", "tests/pacs.py", "tests/studies.py", "scripts/test", "scripts/bridge",
              "benchmarks/bench_receive.py"}
    assert needed <= in_sdist, needed - in_sdist
    snapshots = {p.relative_to(ROOT).as_posix() for p in (ROOT / "tests" / "__snapshots__").rglob("*.svg")}
    assert snapshots and snapshots <= in_sdist


def test_pytest_runs_on_the_unpacked_sdist(installed, tmp_path):
    with tarfile.open(installed.sdist) as archive:
        archive.extractall(tmp_path, filter="data")
    (unpacked,) = tmp_path.iterdir()
    result = run(sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_naming.py",
                 cwd=unpacked)
    assert " passed" in result.stdout
    collected = run(sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--collect-only", cwd=unpacked)
    assert " tests collected" in collected.stdout  # every test module imports (run() checks the exit code)


def test_the_installed_command_runs_from_the_venv_not_from_the_repository(installed):
    result = run(installed.command, "--version", cwd=installed.outside)
    assert result.stdout.strip() == f"dicombridge {bridge.__version__}"
    for package in ("bridge", "tui"):
        assert installed.package_folder(package).is_relative_to(installed.venv), package


def test_the_installed_bridge_receives_a_study_headless(installed, tmp_path):
    port = free_port()
    config = write_config(tmp_path / "config.toml", general__storage_folder=str(tmp_path / "store"),
                          general__min_free_mb=0, receive__port=port, receive__timeout_seconds=1)
    service = HeadlessBridge(config, command=(str(installed.command),), cwd=installed.outside)
    try:
        service.wait_for_line("running headless")
        run_storescu(port, [str(f) for f in make_study(tmp_path / "study", count=2).files])
        assert "2 images zipped into Inbox_Manual" in service.wait_for_line("Receive Success")
    finally:
        code = service.stop()
    assert code == 0
    (zipped,) = (tmp_path / "store" / "Inbox_Manual").glob("*.zip")
    with zipfile.ZipFile(zipped) as archive:
        assert len(archive.namelist()) == 2


class TmuxPane:
    """One program in a detached tmux pane of a given size, on a tmux server of our own."""

    def __init__(self, folder: Path, command: str, size: tuple[int, int] = (80, 24)) -> None:
        self.tmux = system_tool("tmux", "tmux")
        self.socket = folder / "tmux.sock"
        self.exit_file = folder / "exit-code"
        shell_line = f"{command}; echo $? > {shlex.quote(str(self.exit_file))}"
        self._tmux("-f", "/dev/null", "new-session", "-d", "-x", str(size[0]), "-y", str(size[1]), shell_line)

    def _tmux(self, *args: str) -> str:
        return run(self.tmux, "-S", self.socket, *args, timeout=30).stdout

    def text(self) -> str:
        return self._tmux("capture-pane", "-p")

    def wait_for_text(self, *fragments: str, timeout: float = 120) -> str:
        deadline = time.monotonic() + timeout
        shown = ""
        while time.monotonic() < deadline and not self.exit_file.exists():
            shown = self.text()
            if all(fragment in shown for fragment in fragments):
                return shown
            time.sleep(0.2)  # polling a terminal: there is no event to await
        raise AssertionError(f"{fragments} did not appear; the pane shows:\n{shown}")

    def keys(self, *keys: str) -> None:
        self._tmux("send-keys", *keys)

    def exit_code(self, timeout: float = 60) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.exit_file.exists() and self.exit_file.read_text().strip():
                return int(self.exit_file.read_text())
            time.sleep(0.1)
        raise AssertionError(f"the program did not end; the pane shows:\n{self.text()}")

    def close(self) -> None:
        subprocess.run([self.tmux, "-S", str(self.socket), "kill-server"], capture_output=True, timeout=30)


def ui_config(tmp_path: Path) -> tuple[Path, int]:
    port = free_port()
    return write_config(tmp_path / "config.toml", general__storage_folder=str(tmp_path / "store"),
                        general__min_free_mb=0, receive__port=port), port


def test_the_installed_ui_shows_the_log_book_at_80x24_and_ctrl_q_exits_0(installed, tmp_path):
    config, port = ui_config(tmp_path)
    pane = TmuxPane(tmp_path, shlex.join(["cd", str(installed.outside)]) + " && "
                    + shlex.join([str(installed.command), "--config", str(config)]))
    try:
        shown = pane.wait_for_text("Log Book", "Patient / what happened", f"listening on port {port}")
        assert "DicomBridge" in shown
        pane.keys("C-q")
        assert pane.exit_code() == 0
    finally:
        pane.close()


@pytest.mark.parametrize("damage", ["missing", "broken"])
def test_the_installed_ui_without_its_stylesheet_exits_non_zero_and_says_why(installed, tmp_path, damage):
    config, _ = ui_config(tmp_path)
    stylesheet = installed.package_folder("tui") / "app.tcss"
    kept = stylesheet.read_bytes()
    if damage == "missing":
        stylesheet.unlink()
    else:
        stylesheet.write_text("Screen { layout: ; nonsense")
    errors = tmp_path / "stderr.txt"
    pane = TmuxPane(tmp_path, shlex.join(["cd", str(installed.outside)]) + " && "
                    + shlex.join([str(installed.command), "--config", str(config)]) + f" 2> {shlex.quote(str(errors))}")
    try:
        assert pane.exit_code() != 0
    finally:
        pane.close()
        stylesheet.write_bytes(kept)
    told = errors.read_text()
    assert "app.tcss" in "".join(told.split()), told  # Textual wraps long paths
    assert ("is missing (reinstall dicombridge" if damage == "missing" else "the terminal UI failed") in told, told
