"""Hostile and careless clients (issue 11 items 3-4): memory stays bounded whatever a client
claims, bare connections never lock senders out, and the log book says what really happened.

The misbehaving peers are raw-socket clients written here; the real senders are DCMTK storescu.
"""

from __future__ import annotations

import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

from bridge.logbook import WARNING

from .conftest import free_port, start_running_bridge, write_config
from .peers import run_storescu
from .studies import make_study

HUGE = 0xFFFFFFF0
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
IMPLICIT_LITTLE = "1.2.840.10008.1.2"
ROOT = Path(__file__).resolve().parent.parent


def _item(kind: int, payload: bytes) -> bytes:
    return struct.pack(">BBH", kind, 0, len(payload)) + payload


def associate_rq(called: str = "CRYPE_DCM", calling: str = "HOSTILE") -> bytes:
    """A minimal, valid A-ASSOCIATE-RQ PDU proposing CT Image Storage in implicit little endian."""
    context = bytes([1, 0, 0, 0]) + _item(0x30, CT_IMAGE_STORAGE.encode()) + _item(0x40, IMPLICIT_LITTLE.encode())
    user = _item(0x51, struct.pack(">L", 16384)) + _item(0x52, b"1.2.3.4")
    body = (struct.pack(">HH", 1, 0) + called.encode().ljust(16) + calling.encode().ljust(16) + bytes(32)
            + _item(0x10, b"1.2.840.10008.3.1.1.1") + _item(0x20, context) + _item(0x50, user))
    return struct.pack(">BBL", 1, 0, len(body)) + body


def read_pdu(sock: socket.socket) -> tuple[int, bytes] | None:
    """The next PDU (type, body) from the bridge, or None when it closed the connection."""
    header = _read_exactly(sock, 6)
    if header is None:
        return None
    kind, _, length = struct.unpack(">BBL", header)
    body = _read_exactly(sock, length)
    return None if body is None else (kind, body)


def _read_exactly(sock: socket.socket, length: int) -> bytes | None:
    data = b""
    try:
        while len(data) < length:
            chunk = sock.recv(length - len(data))
            if not chunk:
                return None
            data += chunk
    except (ConnectionResetError, TimeoutError):
        return None
    return data


def established(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(associate_rq())
    answer = read_pdu(sock)
    assert answer is not None and answer[0] == 0x02, f"association not accepted: {answer}"
    return sock


def stream_junk(sock: socket.socket, header: bytes, total: int, sent: list[int]) -> None:
    """Send a PDU header claiming a huge length, then junk until ``total`` bytes or the bridge hangs up."""
    chunk = bytes(64 * 1024)
    try:
        sock.sendall(header)
        for _ in range(total // len(chunk)):
            sock.sendall(chunk)
            sent.append(len(chunk))
    except OSError:  # the bridge closed or aborted: what it should do
        pass


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_clients_claiming_huge_pdus_leave_memory_bounded_and_a_study_still_arrives(tmp_path):
    """32 clients at once: 16 claim a 4 GB association request, 16 a 4 GB P-DATA inside an
    association; each then streams 16 MB. Buffering what they claim would need 512 MB."""
    port = free_port()
    store = tmp_path / "store"
    config = write_config(tmp_path / "bridge.toml", general__storage_folder=str(store), general__min_free_mb=0,
                          receive__port=port, receive__timeout_seconds=1, receive__max_associations=40)
    bridge = subprocess.Popen([sys.executable, "-m", "bridge.cli", "--headless", "--config", str(config)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        for line in bridge.stderr:  # type: ignore[union-attr]
            if "running headless" in line:
                break
        threading.Thread(target=lambda: bridge.stderr.read(), daemon=True).start()  # type: ignore[union-attr]
        sockets = [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(16)]
        sockets += [established(port) for _ in range(16)]
        sent: list[int] = []
        claims = [struct.pack(">BBL", 1, 0, HUGE)] * 16 + [struct.pack(">BBL", 4, 0, HUGE)] * 16
        senders = [threading.Thread(target=stream_junk, args=(sock, claim, 16 * 1024 * 1024, sent))
                   for sock, claim in zip(sockets, claims, strict=True)]
        peak = rss_mb(bridge.pid)
        for sender in senders:
            sender.start()
        while any(sender.is_alive() for sender in senders):
            peak = max(peak, rss_mb(bridge.pid))
            for sender in senders:
                sender.join(timeout=0.05)
        peak = max(peak, rss_mb(bridge.pid))
        answers = [read_pdu(sock) for sock in sockets[16:]]
        for sock in sockets:
            sock.close()
        assert peak < 150, f"the bridge grew to {peak:.0f} MB resident"
        assert all(answer is None or answer[0] == 0x07 for answer in answers)  # A-ABORT (or closed)
        files = make_study(tmp_path / "study", count=3).files
        run_storescu(port, [str(f) for f in files])
        deadline = time.monotonic() + 60
        while not list((store / "Inbox_Manual").glob("*.zip")) + list((store / "Inbox_Auto").glob("*.zip")):
            assert time.monotonic() < deadline, "the normal study never arrived"
            time.sleep(0.1)
    finally:
        bridge.send_signal(signal.SIGTERM)
        bridge.wait(timeout=60)


def test_oversized_pdus_are_refused_with_clear_log_book_rows(bridge_settings):
    running = start_running_bridge(bridge_settings)
    try:
        sock = established(running.port)
        sock.sendall(struct.pack(">BBL", 4, 0, HUGE) + bytes(1000))
        answer = read_pdu(sock)
        assert answer is not None and answer[0] == 0x07, f"expected an A-ABORT, got {answer}"
        sock.close()
        with socket.create_connection(("127.0.0.1", running.port), timeout=30) as sock:
            sock.sendall(struct.pack(">BBL", 1, 0, HUGE) + bytes(1000))
            assert read_pdu(sock) is None  # closed without an answer
        details = [row.detail for row in running.engine.logbook.newest() if row.status == WARNING]
        assert (f"association from 127.0.0.1 aborted: it sent a PDU of {HUGE} bytes, more than the 1048576 bytes "
                f"negotiated") in details
        assert (f"connection from 127.0.0.1 closed: an association request claiming {HUGE} bytes "
                f"(more than 1048576)") in details
    finally:
        running.engine.stop(grace_seconds=2)


def test_idle_connections_do_not_lock_senders_out_and_are_closed(bridge_settings, tmp_path):
    running = start_running_bridge(bridge_settings)
    idle = [socket.create_connection(("127.0.0.1", running.port), timeout=30) for _ in range(40)]
    try:
        files = make_study(tmp_path / "study", count=3).files
        run_storescu(running.port, [str(f) for f in files])
        running.wait_routed(1)
        for sock in idle:  # each is closed by the bridge after 5 s without a request
            assert sock.recv(1) == b""
        details = [row.detail for row in running.engine.logbook.newest()]
        assert "connection from 127.0.0.1 closed: no association request within 5 s (a port scanner or health " \
               "check?)" in details
        assert not any("rejected" in detail for detail in details)
    finally:
        for sock in idle:
            sock.close()
        running.engine.stop(grace_seconds=2)


def test_association_limit_counts_associations_and_says_so(bridge_settings, tmp_path):
    running = start_running_bridge(replace(bridge_settings, receive_max_associations=2))
    files = [str(f) for f in make_study(tmp_path / "study", count=1).files]
    holders = [established(running.port), established(running.port)]
    bare = [socket.create_connection(("127.0.0.1", running.port), timeout=30) for _ in range(3)]
    try:
        refused = run_storescu(running.port, files, check=False)
        assert refused.returncode != 0 and "Association Rejected" in refused.stderr
        details = [row.detail for row in running.engine.logbook.newest() if "rejected" in row.detail]
        assert details == [("association from TESTSCU at 127.0.0.1 (called CRYPE_DCM) rejected: 2 associations "
                            "already open; limit receive.max_associations = 2")]
        for sock in holders:
            sock.sendall(struct.pack(">BBLL", 5, 0, 4, 0))  # A-RELEASE-RQ
            assert read_pdu(sock) == (0x06, bytes(4))  # A-RELEASE-RP
            sock.close()
        run_storescu(running.port, files)  # the places are free again; the bare sockets never counted
    finally:
        for sock in holders + bare:
            sock.close()
        running.engine.stop(grace_seconds=2)


def test_a_rejection_names_only_the_setting_in_force(bridge_settings, tmp_path):
    running = start_running_bridge(replace(bridge_settings, receive_check_called_ae_title=True))
    try:
        files = [str(f) for f in make_study(tmp_path / "study", count=1).files]
        assert run_storescu(running.port, files, ae_called="SOMEONE_ELSE", check=False).returncode != 0
        details = [row.detail for row in running.engine.logbook.newest() if "rejected" in row.detail]
        assert details == [("association from TESTSCU at 127.0.0.1 (called SOMEONE_ELSE) rejected: the called AE "
                            "title is not CRYPE_DCM (receive.check_called_ae_title is on)")]
    finally:
        running.engine.stop(grace_seconds=2)
