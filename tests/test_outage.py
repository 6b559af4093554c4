"""A PACS outage is waited out (issue 13): ZIPs stay in the outbox in order, C-ECHO probes,
one row when it starts and one when it ends, a mail after ``notify_after_minutes``, Outbox_Failed
only after ``give_up_after_hours``; 0xA700 is retried, other failure statuses name the image."""

from __future__ import annotations

import logging
import threading

import pytest
from pydicom import dcmread

import bridge.outbox as outbox_module
from bridge.logbook import FAILED, SEND, SUCCESS, WARNING

from .conftest import free_port
from .fakes import FakeClock
from .misbehaving_pacs import MisbehavingPacs
from .pacs import StoreSCP
from .studies import make_large_study, make_study
from .test_send import sending_settings, zip_of


@pytest.fixture(autouse=True)
def quick_probes(monkeypatch):
    monkeypatch.setattr(outbox_module, "PROBE_SECONDS", 0.5)


def outage_rows(bridge) -> list[str]:
    return [row.detail for row in bridge.engine.logbook.newest() if "PACS unreachable since" in row.detail
            or "PACS answers again" in row.detail]


def test_unreachable_pacs_is_waited_out_and_the_zips_go_in_order(bridge_settings, make_bridge, tmp_path):
    port = free_port()
    first = make_study(tmp_path / "first", count=2).files
    second = make_study(tmp_path / "second", count=1).files
    bridge = make_bridge(sending_settings(bridge_settings, port, StoreSCP.aet))
    bridge.drop(zip_of(first), "a-first.zip")
    row = bridge.wait_for_row(lambda r: "PACS unreachable since" in r.detail)
    assert row.status == WARNING and "no connection to the PACS" in row.detail and "1 ZIPs waiting" in row.detail
    bridge.drop(zip_of(second), "b-second.zip")
    status = bridge.engine.status()
    assert status.outbox_waiting == 2 and status.outbox_note.startswith("PACS unreachable since")
    assert "next try" in status.outbox_note
    assert list(bridge.layout.outbox_failed.iterdir()) == []
    scp = StoreSCP(tmp_path / "scp", port=port)
    try:
        done = bridge.wait_done(2)
    finally:
        scp.stop()
    assert [(d.zip_name, d.status) for d in done] == [("a-first.zip", SUCCESS), ("b-second.zip", SUCCESS)]
    assert len(list(scp.folder.iterdir())) == 3
    rows = outage_rows(bridge)
    assert len(rows) == 2, rows  # one when it began, one when it ended: not one per probe
    assert "PACS answers again" in rows[0]
    assert bridge.engine.status().outbox_note == ""


def test_refused_association_is_an_outage_not_a_failure(bridge_settings, make_bridge, tmp_path):
    scp = StoreSCP(tmp_path / "refusing", extra_args=("--refuse",))
    files = make_study(tmp_path / "study", count=1).files
    bridge = make_bridge(sending_settings(bridge_settings, scp.port, scp.aet))
    try:
        bridge.drop(zip_of(files))
        row = bridge.wait_for_row(lambda r: "PACS unreachable since" in r.detail)
        assert "rejected" in row.detail or "aborted" in row.detail
    finally:
        scp.stop()
    scp = StoreSCP(tmp_path / "scp", port=scp.port)
    try:
        (done,) = bridge.wait_done()
    finally:
        scp.stop()
    assert done.status == SUCCESS


def test_a_mail_after_notify_minutes_and_outbox_failed_after_give_up_hours(bridge_settings, make_bridge, tmp_path):
    clock = FakeClock()
    bridge = make_bridge(sending_settings(bridge_settings, free_port(), "NOBODY", send_notify_after_minutes=15,
                                          send_give_up_after_hours=24))
    assert bridge.engine.outbox is not None
    bridge.engine.outbox.clock = clock
    bridge.drop(zip_of(make_study(tmp_path / "study", count=1).files), "waiting.zip")
    bridge.wait_for_row(lambda r: "PACS unreachable since" in r.detail)
    clock.advance(16 * 60)
    row = bridge.wait_for_row(lambda r: r.needs_attention)
    assert "still unreachable after 15 minutes" in row.detail and "1 ZIPs waiting" in row.detail
    clock.advance(3600)
    with pytest.raises(Exception):  # noqa: B017 - queue.Empty: no second mail for the same outage
        bridge.wait_for_row(lambda r: r.needs_attention or r.status == FAILED, timeout=2)
    assert list(bridge.layout.outbox_failed.iterdir()) == []
    clock.advance(24 * 3600)
    (done,) = bridge.wait_done()
    assert (done.zip_name, done.status) == ("waiting.zip", FAILED)
    reason = (bridge.layout.outbox_failed / "waiting.zip.reason.txt").read_text()
    assert "could not take it for 25.3 hours" in reason and "give_up_after_hours" in reason


def test_out_of_resources_is_retried_and_only_unstored_images_are_sent_again(bridge_settings, make_bridge, tmp_path):
    files = make_study(tmp_path / "study", count=4).files
    busy = str(dcmread(files[1]).SOPInstanceUID)
    pacs = MisbehavingPacs(lambda uid, n: 0xA700 if uid == busy and n <= 2 else 0x0000)
    try:
        bridge = make_bridge(sending_settings(bridge_settings, pacs.port, pacs.aet))
        bridge.drop(zip_of(files))
        row = bridge.wait_for_row(lambda r: "PACS unreachable since" in r.detail)
        assert "series/0001.dcm: the PACS answered 0xA700 out of resources" in row.detail
        (done,) = bridge.wait_done()
    finally:
        pacs.stop()
    assert done.status == SUCCESS
    assert set(pacs.stored.values()) == {1} and len(pacs.stored) == 4  # each image stored once
    assert pacs.requests[busy] == 3 and sum(pacs.requests.values()) == 6


def test_a_refused_image_fails_the_zip_with_its_name_and_status_text(bridge_settings, make_bridge, tmp_path):
    files = make_study(tmp_path / "study", count=3).files
    bad = str(dcmread(files[2]).SOPInstanceUID)
    pacs = MisbehavingPacs(lambda uid, n: 0xC000 if uid == bad else 0x0000)
    try:
        bridge = make_bridge(sending_settings(bridge_settings, pacs.port, pacs.aet))
        bridge.drop(zip_of(files), "refused.zip")
        (done,) = bridge.wait_done()
        assert done.status == FAILED
        good = make_study(tmp_path / "good", count=1).files
        bridge.drop(zip_of(good), "good.zip")
        (done,) = bridge.wait_done()
        assert done.status == SUCCESS
    finally:
        pacs.stop()
    reason = (bridge.layout.outbox_failed / "refused.zip.reason.txt").read_text()
    assert "1 of 3 images were not stored: series/0002.dcm: the PACS answered 0xC000 cannot understand" in reason
    assert pacs.requests[bad] == 1  # a refusal is final: not retried


REPEATS = 20  # issue 14: zero stalls in 20 consecutive runs


@pytest.mark.parametrize("repeat", range(REPEATS))
def test_large_zip_to_storescp_never_stalls(bridge_settings, make_bridge, tmp_path_factory, caplog, repeat):
    """The 30-second stall: the C-STORE-RSP taken by pynetdicom's reactor (2 of 3 runs before the fix)."""
    folder = tmp_path_factory.getbasetemp() / "large-study"
    if not folder.exists():
        make_large_study(folder, count=500)
    files = sorted(folder.glob("*.dcm"))
    assert len(files) == 500
    work = tmp_path_factory.mktemp("stall")
    scp = StoreSCP(work / "scp", extra_args=("--ignore",))
    caplog.set_level(logging.WARNING, logger="pynetdicom")
    try:
        bridge = make_bridge(sending_settings(bridge_settings, scp.port, scp.aet))
        bridge.drop(zip_of(files))
        (done,) = bridge.wait_done(timeout=300)
    finally:
        scp.stop()
    assert "unexpected C-STORE" not in caplog.text and "DIMSE timeout" not in caplog.text
    row = bridge.engine.logbook.newest()[0]
    assert (row.action, done.status, row.detail) == (SEND, SUCCESS, "500 images stored in the PACS")


def test_status_line_shows_the_outage_and_restarted_workers():
    from bridge.events import BridgeStatus
    from tui.status_bar import describe

    status = BridgeStatus(listening=True, port=104, receiver_error="", pending=(), outbox_waiting=3, owner_pid=None,
                          outbox_note="PACS unreachable since 10:02, 3 ZIPs waiting, next try 10:15:30",
                          worker_notes=("janitor restarted 1× (PermissionError: denied)",))
    line = describe(status)
    assert "outbox: PACS unreachable since 10:02, 3 ZIPs waiting, next try 10:15:30" in line
    assert "janitor restarted 1× (PermissionError: denied)" in line
    quiet = describe(BridgeStatus(listening=True, port=104, receiver_error="", pending=(), outbox_waiting=0,
                                  owner_pid=None))
    assert "outbox: 0 waiting" in quiet


def test_a_stalled_pacs_is_retried_and_only_the_unanswered_image_is_sent_again(bridge_settings, make_bridge,
                                                                             tmp_path, monkeypatch):
    import bridge.pacs

    monkeypatch.setattr(bridge.pacs.pacs_target, "__defaults__", (2.0,))  # the DIMSE timeout, 30 s normally
    files = make_study(tmp_path / "study", count=3).files
    stalled = str(dcmread(files[1]).SOPInstanceUID)
    release = threading.Event()

    def rule(uid: str, n: int) -> int:
        if uid == stalled and n == 1:
            release.wait(30)  # a PACS that never answers this C-STORE
        return 0x0000

    pacs = MisbehavingPacs(rule)
    try:
        bridge = make_bridge(sending_settings(bridge_settings, pacs.port, pacs.aet))
        bridge.drop(zip_of(files))
        (done,) = bridge.wait_done()
    finally:
        release.set()
        pacs.stop()
    assert done.status == SUCCESS
    others = {uid: count for uid, count in pacs.requests.items() if uid != stalled}
    assert pacs.requests[stalled] == 2 and set(others.values()) == {1} and len(others) == 2
