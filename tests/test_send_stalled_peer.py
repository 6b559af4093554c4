"""A PACS that stops reading in the middle of an image must not hold the sender for ever (issue 14)."""

from __future__ import annotations

import threading

import pytest

from bridge import sender
from bridge.fast_send import FastSendDUL

from .pacs import StoreSCP
from .slow_link import SlowLink
from .studies import make_study

BIG_PIXELS = bytes(16 * 1024 * 1024)  # far more than the loopback socket buffers hold


@pytest.mark.timeout(120)
def test_a_pacs_that_stops_reading_mid_image_ends_the_try_within_the_network_timeout(tmp_path):
    files = make_study(tmp_path / "study", count=2, customize=lambda d: setattr(d, "PixelData", BIG_PIXELS)).files
    scp = StoreSCP(tmp_path / "scp")
    link = SlowLink(scp.port, bytes_per_second=1e9, stall_after_bytes=2 * 1024 * 1024)
    outcome: list[BaseException | sender.SendReport] = []

    def send() -> None:
        target = sender.PacsTarget("127.0.0.1", link.port, scp.aet, "BRIDGE", network_timeout_seconds=2)
        try:
            outcome.append(sender.send_files(target, [sender.read_meta(f) for f in files], sender.SendReport()))
        except BaseException as err:  # noqa: BLE001 - handed to the test's thread
            outcome.append(err)

    sent_before = FastSendDUL.sent
    thread = threading.Thread(target=send, daemon=True)
    try:
        thread.start()
        thread.join(90)  # a hung DUL thread would keep it here until the test's timeout
        assert not thread.is_alive(), "the sender hangs on a PACS that stopped reading"
    finally:
        link.close()
        scp.stop()
    (result,) = outcome
    assert isinstance(result, sender.TransientSendError), result  # worth another try later, not a failure
    assert FastSendDUL.sent == sent_before  # the image was not counted as written


def test_a_slow_link_that_keeps_taking_bytes_is_not_a_stall(tmp_path):
    """1 MB at 400 kB/s takes longer than the 2 s network timeout in all, never without progress."""
    files = make_study(tmp_path / "study", count=1,
                       customize=lambda d: setattr(d, "PixelData", bytes(1024 * 1024))).files
    scp = StoreSCP(tmp_path / "scp")
    try:
        with SlowLink(scp.port, bytes_per_second=400_000) as link:
            target = sender.PacsTarget("127.0.0.1", link.port, scp.aet, "BRIDGE", network_timeout_seconds=2)
            report = sender.send_files(target, [sender.read_meta(f) for f in files], sender.SendReport())
    finally:
        scp.stop()
    assert report.ok and len(report.delivered) == 1
