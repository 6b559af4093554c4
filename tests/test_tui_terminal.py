"""The installed ``dicombridge`` in a real terminal: tmux at 80×24, a study from DCMTK's storescu,
its Log Book row read back from the screen with ``tmux capture-pane``."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import free_port, write_config
from .peers import run_storescu
from .studies import make_study

TMUX = shutil.which("tmux")


def _tmux(socket: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([TMUX or "tmux", "-S", str(socket), *args], capture_output=True, text=True, timeout=30)


def _screen(socket: Path) -> str:
    return _tmux(socket, "capture-pane", "-p", "-t", "ui").stdout


def _wait_for_screen(socket: Path, wanted, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while True:
        text = _screen(socket)
        if wanted(text):
            return text
        if time.monotonic() > deadline:
            raise AssertionError(f"not on screen in time:\n{text}")
        time.sleep(0.2)


def test_dicombridge_in_tmux_shows_a_study_sent_by_storescu(tmp_path):
    if TMUX is None:
        if os.environ.get("CI") == "true":
            pytest.fail("tmux is missing on the CI machine (apt-get install tmux)")
        pytest.skip("tmux is not installed: the real-terminal test needs it (apt-get install tmux)")
    command = Path(sys.executable).parent / "dicombridge"
    assert command.exists(), "the venv's console script is missing (pip install -e .)"
    port = free_port()
    config = write_config(tmp_path / "config.toml", general__storage_folder=str(tmp_path / "store"),
                          general__min_free_mb=0, receive__port=port, receive__timeout_seconds=1)
    socket = tmp_path / "tmux.sock"
    started = _tmux(socket, "new-session", "-d", "-s", "ui", "-x", "80", "-y", "24",
                    f"TERM=xterm-256color {command} --config {config}")
    assert started.returncode == 0, started.stderr
    try:
        _wait_for_screen(socket, lambda text: f"listening on port {port}" in text)
        study = make_study(tmp_path / "send", count=2, patient_name="TERMINAL^Tessa")
        run_storescu(port, [str(f) for f in study.files])
        screen = _wait_for_screen(socket, lambda text: "TERMINAL, Tessa" in text)
        row = next(line for line in screen.splitlines() if "TERMINAL, Tessa" in line)
        assert "Success" in row and "Receive" in row, row
        assert len(screen.splitlines()) <= 24 and all(len(line) <= 80 for line in screen.splitlines())
        _tmux(socket, "send-keys", "-t", "ui", "C-q")
        deadline = time.monotonic() + 60
        while _tmux(socket, "has-session", "-t", "ui").returncode == 0:
            assert time.monotonic() < deadline, "Ctrl+Q did not end the UI"
            time.sleep(0.2)
    finally:
        _tmux(socket, "kill-server")
