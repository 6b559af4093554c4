"""systemd's notify protocol played by the test: READY=1 once the port is open, WATCHDOG=1 while
the engine's workers live, STOPPING=1 on SIGTERM; a stuck worker stops the keep-alives."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest

from bridge import headless, sd_notify
from bridge.liveness import Liveness

from .conftest import free_port, write_config
from .peers import run_storescu
from .studies import make_study


class FakeSystemd:
    """The datagram socket systemd would listen on; ``next()`` returns one notification's lines."""

    def __init__(self, address: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.address = address

    def next(self, timeout: float = 60) -> list[str]:
        self.sock.settimeout(timeout)
        return self.sock.recv(4096).decode("utf-8").splitlines()

    def wait_for(self, line: str, timeout: float = 60) -> list[list[str]]:
        """Every notification up to and including the one holding ``line``."""
        seen = []
        while True:
            seen.append(self.next(timeout))
            if line in seen[-1]:
                return seen

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def systemd(tmp_path, monkeypatch):
    fake = FakeSystemd(str(tmp_path / "notify"))
    monkeypatch.setenv("NOTIFY_SOCKET", fake.address)
    yield fake
    fake.close()


def _start_bridge(tmp_path: Path, port: int, watchdog_usec: int = 2_000_000) -> subprocess.Popen[bytes]:
    config = write_config(tmp_path / "config.toml", general__storage_folder=str(tmp_path / "store"),
                          general__min_free_mb=0, receive__port=port, receive__timeout_seconds=1)
    env = {**os.environ, "WATCHDOG_USEC": str(watchdog_usec)}  # NOTIFY_SOCKET comes from the fixture
    return subprocess.Popen([sys.executable, "-m", "bridge.cli", "--headless", "--config", str(config)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _port_accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
        return True
    except OSError:
        return False


def test_ready_after_the_port_opens_then_keep_alives_then_stopping(tmp_path, systemd):
    port = free_port()
    bridge = _start_bridge(tmp_path, port)
    try:
        before_ready = systemd.wait_for("READY=1")
        assert _port_accepts(port), "READY=1 came before the listener accepted connections"
        assert any(line.startswith("STATUS=starting") for message in before_ready for line in message)
        assert any(line.startswith("STATUS=running: receiving on port") for line in before_ready[-1])
        run_storescu(port, [str(p) for p in make_study(tmp_path / "study", count=2).files])
        keep_alives = []
        while len(keep_alives) < 3:  # periodic, and still coming after a study went through
            keep_alives += [message for message in [systemd.next()] if "WATCHDOG=1" in message]
        assert keep_alives[-1][1].startswith(f"STATUS=running: listening on port {port}; ")
        bridge.send_signal(signal.SIGTERM)
        assert "STOPPING=1" in systemd.wait_for("STOPPING=1")[-1]
        assert bridge.wait(timeout=60) == 0
    finally:
        if bridge.poll() is None:
            bridge.kill()
            bridge.wait(timeout=30)


def test_no_ready_when_the_port_cannot_be_opened(tmp_path, systemd):
    with socket.socket() as taken:
        taken.bind(("", 0))
        taken.listen()
        bridge = _start_bridge(tmp_path, taken.getsockname()[1])
        assert bridge.wait(timeout=60) == headless.EXIT_START_FAILED
    messages = []
    systemd.sock.setblocking(False)
    while True:
        try:
            messages.append(systemd.sock.recv(4096).decode())
        except BlockingIOError:
            break
    assert not any("READY=1" in message for message in messages)
    assert any("STATUS=cannot start: cannot listen on port" in message for message in messages)


def test_a_stuck_worker_stops_the_keep_alives(running_bridge, systemd):
    """The zip loop blocks (as on a hung disk): keep-alives stop and the log book says why."""
    engine = running_bridge.engine
    released = threading.Event()
    checks = threading.Semaphore(0)
    real_claim_due, real_stuck_workers = engine.aggregator.claim_due, engine.stuck_workers

    def hung_claim_due():
        released.wait(timeout=120)
        return real_claim_due()

    def counted_stuck_workers(max_age_seconds: float) -> list[str]:
        result = real_stuck_workers(max_age_seconds)
        checks.release()
        return result

    engine.stuck_workers = counted_stuck_workers  # type: ignore[method-assign]
    stop = threading.Event()
    runner = threading.Thread(target=headless.keep_alive, args=(engine, stop, 1.0), daemon=True)
    runner.start()
    try:
        assert "WATCHDOG=1" in systemd.next()  # alive at first
        engine.aggregator.claim_due = hung_claim_due  # type: ignore[method-assign]
        stuck = next(message for message in iter(systemd.next, None) if message[0].startswith("STATUS="))
        assert stuck[0].startswith("STATUS=stuck: zipper (no sign of life for"), stuck
        drained = []
        while checks.acquire(blocking=False):  # forget the checks up to the one that reported
            pass
        for _ in range(4):  # four more checks, each of them finding the zipper stuck: no keep-alive
            assert checks.acquire(timeout=60)
        systemd.sock.setblocking(False)
        try:
            while True:
                drained.append(systemd.sock.recv(4096).decode())
        except BlockingIOError:
            pass
        assert not any("WATCHDOG=1" in message for message in drained), drained
        assert any(row.detail.startswith("bridge stuck: zipper") for row in engine.logbook.newest(20))
        released.set()  # the worker comes back: keep-alives resume
        systemd.sock.setblocking(True)
        assert "WATCHDOG=1" in systemd.wait_for("WATCHDOG=1", timeout=60)[-1]
    finally:
        released.set()
        stop.set()
        runner.join(timeout=30)


def test_notify_reaches_an_abstract_socket_and_is_silent_outside_systemd(monkeypatch):
    name = f"dicombridge-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind("\0" + name)
        listener.settimeout(30)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert sd_notify.notify("READY=1", "STATUS=up")
        assert listener.recv(4096) == b"READY=1\nSTATUS=up"
    monkeypatch.delenv("NOTIFY_SOCKET")
    assert not sd_notify.notify("READY=1")


def test_watchdog_interval_from_the_environment(monkeypatch):
    monkeypatch.setenv("WATCHDOG_USEC", "60000000")
    assert sd_notify.watchdog_interval() == 60.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))  # meant for another process
    assert sd_notify.watchdog_interval() is None
    monkeypatch.delenv("WATCHDOG_PID")
    monkeypatch.delenv("WATCHDOG_USEC")
    assert sd_notify.watchdog_interval() is None


def test_liveness_names_the_loops_that_stopped_ticking():
    now = [100.0]
    liveness = Liveness(clock=lambda: now[0])
    liveness.tick("zipper")
    now[0] += 30
    liveness.tick("receiver")
    now[0] += 40  # zipper silent for 70 s, receiver for 40 s, outbox never ticked (counted from creation)
    assert liveness.stuck(["zipper", "receiver", "outbox"], 60) == [
        "zipper (no sign of life for 70 s)", "outbox (no sign of life for 70 s)"]


def test_zipping_a_study_ticks_per_image_so_a_long_zip_is_not_a_hang(running_bridge, tmp_path):
    ticks = []
    running_bridge.engine.zipper.progress = lambda: ticks.append(1)
    run_storescu(running_bridge.port, [str(p) for p in make_study(tmp_path / "study", count=5).files])
    running_bridge.wait_routed()
    assert len(ticks) == 5


def test_a_dead_outbox_thread_counts_as_stuck(running_bridge):
    engine = running_bridge.engine
    assert engine.stuck_workers(60) == []

    class DeadOutbox:
        alive = False

    engine.outbox = DeadOutbox()  # type: ignore[assignment]
    try:
        assert engine.stuck_workers(60) == ["outbox (thread ended)"]
    finally:
        engine.outbox = None


def test_sigterm_stops_at_once_between_rare_keep_alives(tmp_path, systemd):
    """With a long watchdog interval the main loop sleeps long; SIGTERM must not wait for it."""
    bridge = _start_bridge(tmp_path, free_port(), watchdog_usec=600_000_000)  # keep-alive every 300 s
    try:
        systemd.wait_for("READY=1")
        bridge.send_signal(signal.SIGTERM)
        assert "STOPPING=1" in systemd.wait_for("STOPPING=1", timeout=120)[-1]  # far less than 300 s
        assert bridge.wait(timeout=60) == 0
    finally:
        if bridge.poll() is None:
            bridge.kill()
            bridge.wait(timeout=30)
