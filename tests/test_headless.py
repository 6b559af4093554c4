"""``dicombridge --headless`` as a real process: fed by DCMTK, stopped by SIGTERM, clear errors."""

from __future__ import annotations

import errno
import queue
import signal
import socket
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

from bridge.receiver import explain_bind_error

from .conftest import free_port, write_config
from .peers import run_storescu, send_watching_acks
from .studies import make_study

ID = "1234567890123456"


class HeadlessBridge:
    """The service as a subprocess; its stderr lines are read by a thread so waits can time out."""

    def __init__(self, config: Path, command: tuple[str, ...] = (sys.executable, "-m", "bridge.cli"),
                 cwd: Path | None = None) -> None:
        self.process = subprocess.Popen(
            [*command, "--headless", "--config", str(config)],
            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, cwd=cwd)
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        for line in self.process.stderr:  # type: ignore[union-attr]
            self.lines.put(line)
        self.lines.put("")  # end of stream

    def wait_for_line(self, fragment: str, timeout: float = 60) -> str:
        while True:
            line = self.lines.get(timeout=timeout)
            self.seen.append(line)
            if fragment in line:
                return line
            if line == "":
                raise AssertionError(f"process ended before {fragment!r}: {''.join(self.seen)}")

    def stop(self, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=timeout)
        if code != 0:  # show why in the test report
            rest = []
            while not self.lines.empty():
                rest.append(self.lines.get_nowait())
            print("".join(self.seen[-20:] + rest))
        return code


def _config(tmp_path: Path, port: int, **extra) -> Path:
    values = dict(general__storage_folder=str(tmp_path / "store"), general__min_free_mb=0, receive__port=port,
                  receive__timeout_seconds=1, receive__crid_tag_group="0010", receive__crid_tag_element="2201")
    return write_config(tmp_path / "config.toml", **{**values, **extra})


def test_headless_receives_zips_and_stops_on_sigterm(tmp_path):
    port = free_port()
    bridge = HeadlessBridge(_config(tmp_path, port))
    try:
        bridge.wait_for_line("running headless")
        study = make_study(tmp_path / "send", count=3, crid_value=f"CRID#{ID}")
        run_storescu(port, [str(f) for f in study.files])
        line = bridge.wait_for_line("Receive Success")
        assert "3 images zipped into Inbox_Auto" in line
    finally:
        code = bridge.stop()
    assert code == 0
    store = tmp_path / "store"
    zips = list((store / "Inbox_Auto").glob("*.zip"))
    assert len(zips) == 1 and zips[0].name.endswith(f"{study.uid}_CRID#{ID}.zip")
    assert list((store / ".bridge" / "staging").iterdir()) == []
    assert list((store / ".bridge" / "incoming").iterdir()) == []
    assert (store / "Logs" / "dicombridge.log").read_text().count("Receive Success") == 1


def test_port_in_use_is_a_clear_start_error(tmp_path):
    with socket.socket() as holder:
        holder.bind(("", 0))
        holder.listen()
        port = holder.getsockname()[1]
        bridge = HeadlessBridge(_config(tmp_path, port))
        code = bridge.process.wait(timeout=60)
        message = "".join(_drain(bridge))
    assert code == 3
    assert f"port {port}" in message and "already in use" in message


def _drain(bridge: HeadlessBridge) -> list[str]:
    lines = []
    while True:
        line = bridge.lines.get(timeout=30)
        if line == "":
            return lines
        lines.append(line)


def test_invalid_config_names_the_key(tmp_path):
    config = _config(tmp_path, free_port(), receive__timeout_seconds=0)
    result = subprocess.run([sys.executable, "-m", "bridge.cli", "--headless", "--config", str(config)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "receive.timeout_seconds" in result.stderr and "1 to 3600" in result.stderr


def test_unusable_storage_folder_is_a_clear_start_error(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    config = write_config(tmp_path / "config.toml", general__storage_folder=str(blocker / "store"),
                          receive__port=free_port())
    result = subprocess.run([sys.executable, "-m", "bridge.cli", "--headless", "--config", str(config)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 3
    assert "storage folder" in result.stderr and "not usable" in result.stderr


def test_second_bridge_on_the_same_folder_refuses_to_start(tmp_path):
    first = HeadlessBridge(_config(tmp_path, free_port()))
    try:
        first.wait_for_line("running headless")
        config2 = write_config(tmp_path / "second.toml", general__storage_folder=str(tmp_path / "store"),
                               receive__port=free_port())
        result = subprocess.run([sys.executable, "-m", "bridge.cli", "--headless", "--config", str(config2)],
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 3
        assert f"pid {first.process.pid}" in result.stderr
        assert first.process.poll() is None
    finally:
        assert first.stop() == 0


def test_low_port_message_says_how_to_fix():
    message = explain_bind_error(PermissionError(errno.EACCES, "Permission denied"), 104)
    assert "below 1024 need privileges" in message and "11112" in message and "cap_net_bind_service" in message


def test_version():
    result = subprocess.run([sys.executable, "-m", "bridge.cli", "--version"], capture_output=True, text=True,
                            timeout=60)
    assert result.stdout.startswith("dicombridge ")



def test_sigterm_during_reception_keeps_every_acknowledged_image(tmp_path):
    """Stop mid-study: the association may finish, nothing acknowledged is lost, and the next
    start zips exactly the acknowledged images (the spool survives the restart)."""
    port = free_port()
    config = _config(tmp_path, port, receive__timeout_seconds=3600)
    study = make_study(tmp_path / "send", count=150, crid_value=f"CRID#{ID}")
    first = HeadlessBridge(config)
    first.wait_for_line("running headless")
    acknowledged = len(send_watching_acks(port, [str(f) for f in study.files], after=20,
                                          action=lambda _sender: first.process.send_signal(signal.SIGTERM)))
    assert first.process.wait(timeout=60) == 0
    store = tmp_path / "store"
    assert list((store / "Inbox_Auto").glob("*.zip")) == []  # the timeout never ran out
    assert list((store / ".bridge" / "incoming").iterdir()) == []

    second = HeadlessBridge(_config(tmp_path, port, receive__timeout_seconds=1))
    try:
        line = second.wait_for_line("Receive Success")
    finally:
        assert second.stop() == 0
    assert f"{acknowledged} images zipped" in line
    (zip_path,) = (store / "Inbox_Auto").glob("*.zip")
    assert len(zipfile.ZipFile(zip_path).namelist()) == acknowledged >= 20


def test_saved_settings_apply_without_restart_and_bad_ones_are_refused(tmp_path):
    from bridge.settings import save_values

    old_port, new_port = free_port(), free_port()
    config = _config(tmp_path, old_port)
    bridge = HeadlessBridge(config)
    try:
        bridge.wait_for_line("running headless")
        config.write_text(config.read_text().replace(f"port = {old_port}", "port = 0"))
        bridge.wait_for_line("settings file refused")
        run_storescu(old_port, [str(make_study(tmp_path / "a", count=1).files[0])])  # still on the old port
        save_values(config, {"receive.port": new_port})
        bridge.wait_for_line(f"receiver listening on port {new_port}")
        run_storescu(new_port, [str(make_study(tmp_path / "b", count=1).files[0])])
        refused = run_storescu(old_port, [str(make_study(tmp_path / "c", count=1).files[0])], check=False)
        assert refused.returncode != 0
    finally:
        assert bridge.stop() == 0
