"""Storage commitment in the outbox (issue 14): a ZIP is deleted only after the PACS confirms.

Against Orthanc as storage commitment SCP (it reports on a new association to the bridge's
receiver), and against a PACS of our own that never reports or reports failures.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from pydicom import dcmread

import bridge.outbox as outbox_module
from bridge.logbook import FAILED, SEND, SUCCESS, WARNING

from .commitment_pacs import CommitmentPacs
from .conftest import free_port
from .fakes import FakeClock
from .pacs import Orthanc, StoreSCP
from .studies import make_study
from .test_send import drop_and_wait, sending_settings, zip_of

pytestmark = pytest.mark.peers

OUR_AET = "BRIDGE_SC"  # send.ae_title_sender: the AE title the PACS knows us by


@pytest.fixture(autouse=True)
def quick_probes(monkeypatch):
    monkeypatch.setattr(outbox_module, "PROBE_SECONDS", 0.5)
    monkeypatch.setattr(outbox_module, "REPORT_ON_SAME_ASSOCIATION_SECONDS", 0.2)


def committing_settings(bridge_settings, port: int, called: str, **changes):
    """Sending with storage commitment, and receiving on (the PACS reports to the receiver)."""
    return replace(sending_settings(bridge_settings, port, called), receive_enabled=True,
                   send_storage_commitment=True, send_ae_title_sender=OUR_AET, **changes)


def send_rows(bridge) -> list:
    return [row for row in bridge.engine.logbook.newest() if row.action == SEND]


def uids(files) -> list[str]:
    return [str(dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in files]


def test_the_zip_is_deleted_after_orthanc_commits_every_image(bridge_settings, make_bridge, tmp_path):
    settings = bridge_settings
    orthanc = Orthanc(tmp_path / "orthanc", DicomModalities={"bridge": [OUR_AET, "127.0.0.1", settings.receive_port]})
    try:
        files = make_study(tmp_path / "study", count=3).files
        bridge = make_bridge(committing_settings(settings, orthanc.port, orthanc.aet))
        bridge.drop(zip_of(files), "study.zip")
        (done,) = bridge.wait_done()
        assert set(uids(files)) <= set(orthanc.sop_uids())
    finally:
        orthanc.stop()
    assert (done.zip_name, done.status) == ("study.zip", SUCCESS)
    (row,) = [r for r in send_rows(bridge) if r.target == "study.zip"]
    assert row.detail == "3 images stored in the PACS and committed by the PACS" and row.image_count == 3
    assert list(bridge.layout.outbox_work.iterdir()) == [] and list(bridge.layout.outbox_failed.iterdir()) == []


def test_a_pacs_that_never_reports_keeps_the_zip_then_it_is_sent_and_committed_again(
        bridge_settings, make_bridge, tmp_path):
    files = make_study(tmp_path / "study", count=2).files
    pacs = CommitmentPacs(bridge_settings.receive_port, lambda asked, instances: None if asked == 1 else {})
    clock = FakeClock()
    try:
        bridge = make_bridge(committing_settings(bridge_settings, pacs.port, pacs.aet, send_commit_timeout_minutes=10))
        bridge.engine.outbox.clock = clock
        bridge.drop(zip_of(files), "late.zip")
        pacs.wait_asked(1)
        assert bridge.engine.status().outbox_note.startswith("waiting for storage commitment of late.zip since")
        clock.advance(10 * 60)
        row = bridge.wait_for_row(lambda r: "waiting for storage commitment since" in r.detail)
        assert row.status == WARNING and "sent no report" in row.detail and "within 10 minutes" in row.detail
        assert OUR_AET in row.detail  # what to check in the PACS's configuration
        assert [p.name for p in bridge.layout.outbox_work.glob("*/*.zip")] == ["late.zip"]
        assert list(bridge.layout.outbox_failed.iterdir()) == []
        assert bridge.engine.status().outbox_note.startswith("waiting for storage commitment since")
        clock.advance(1)  # the next probe is due: sent again, asked again, and now it reports
        (done,) = bridge.wait_done()
    finally:
        pacs.stop()
    assert done.status == SUCCESS
    assert len(pacs.asked) == 2 and all(pacs.stored[uid] == 2 for uid in uids(files))
    details = [r.detail for r in send_rows(bridge)]
    assert any(d.startswith("PACS answers the storage commitment request again after") for d in details)
    assert "2 images stored in the PACS and committed by the PACS" in details
    assert list(bridge.layout.outbox_work.iterdir()) == []


def test_never_confirmed_fails_after_give_up_after_hours(bridge_settings, make_bridge, tmp_path):
    pacs = CommitmentPacs(bridge_settings.receive_port, lambda asked, instances: None)
    clock = FakeClock()
    try:
        bridge = make_bridge(committing_settings(bridge_settings, pacs.port, pacs.aet, send_give_up_after_hours=1))
        bridge.engine.outbox.clock = clock
        bridge.drop(zip_of(make_study(tmp_path / "study", count=1).files), "never.zip")
        pacs.wait_asked(1)
        clock.advance(2 * 3600)
        (done,) = bridge.wait_done()
    finally:
        pacs.stop()
    assert (done.zip_name, done.status) == ("never.zip", FAILED)
    reason = (bridge.layout.outbox_failed / "never.zip.reason.txt").read_text()
    assert "give_up_after_hours" in reason and "waiting for storage commitment since" in reason


@pytest.mark.parametrize("failing_reports", [1, 2])
def test_instances_the_pacs_did_not_commit_are_sent_again_then_the_zip_fails_naming_them(
        bridge_settings, make_bridge, tmp_path, failing_reports):
    files = make_study(tmp_path / "study", count=3).files
    lost = uids(files)[1]
    pacs = CommitmentPacs(bridge_settings.receive_port,
                          lambda asked, instances: {lost: 0x0112} if asked <= failing_reports else {})
    bridge, done = drop_and_wait(make_bridge, committing_settings(bridge_settings, pacs.port, pacs.aet), pacs,
                                 zip_of(files), "lossy.zip")
    assert pacs.asked[1] == [lost] and pacs.stored[lost] == 2  # only that one was sent and asked again
    assert all(pacs.stored[uid] == 1 for uid in uids(files) if uid != lost)
    if failing_reports == 1:
        assert done.status == SUCCESS
        assert list(bridge.layout.outbox_failed.iterdir()) == []
        return
    assert done.status == FAILED
    reason = (bridge.layout.outbox_failed / "lossy.zip.reason.txt").read_text()
    assert "did not commit 1 of 3 stored images" in reason
    assert f"series/0001.dcm ({lost}): 0x0112 no such object instance" in reason


def test_an_instance_left_out_of_the_report_is_sent_and_asked_again(bridge_settings, make_bridge, tmp_path):
    files = make_study(tmp_path / "study", count=2).files
    forgotten = uids(files)[0]
    pacs = CommitmentPacs(bridge_settings.receive_port,
                          lambda asked, instances: {forgotten: -1} if asked == 1 else {})
    _bridge, done = drop_and_wait(make_bridge, committing_settings(bridge_settings, pacs.port, pacs.aet), pacs,
                                  zip_of(files), "partial.zip")
    assert done.status == SUCCESS and pacs.asked[1] == [forgotten] and pacs.stored[forgotten] == 2


def test_a_pacs_without_storage_commitment_fails_the_zip_with_the_reason(bridge_settings, make_bridge, tmp_path):
    scp = StoreSCP(tmp_path / "scp")
    bridge, done = drop_and_wait(make_bridge, committing_settings(bridge_settings, scp.port, scp.aet), scp,
                                 zip_of(make_study(tmp_path / "study", count=1).files), "plain.zip")
    assert done.status == FAILED
    reason = (bridge.layout.outbox_failed / "plain.zip.reason.txt").read_text()
    assert "does not support storage commitment" in reason and "send.storage_commitment" in reason


def test_with_commitment_off_nothing_is_asked(bridge_settings, make_bridge, tmp_path):
    pacs = CommitmentPacs(bridge_settings.receive_port, lambda asked, instances: {})
    try:
        bridge = make_bridge(sending_settings(bridge_settings, pacs.port, pacs.aet))
        bridge.drop(zip_of(make_study(tmp_path / "study", count=2).files), "plain.zip")
        (done,) = bridge.wait_done()
    finally:
        pacs.stop()
    assert done.status == SUCCESS and pacs.asked == []
    assert "2 images stored in the PACS" in [r.detail for r in send_rows(bridge)]


def test_with_receiving_disabled_a_report_on_the_same_association_commits(bridge_settings, make_bridge, tmp_path):
    pacs = CommitmentPacs(None, lambda asked, instances: {})
    try:
        bridge = make_bridge(replace(sending_settings(bridge_settings, pacs.port, pacs.aet),
                                     send_storage_commitment=True))
        bridge.drop(zip_of(make_study(tmp_path / "study", count=2).files), "same.zip")
        (done,) = bridge.wait_done()
    finally:
        pacs.stop()
    assert done.status == SUCCESS and len(pacs.reported) == 1 and bridge.engine.receiver is None
    assert "2 images stored in the PACS and committed by the PACS" in [r.detail for r in send_rows(bridge)]


def test_receiving_disabled_says_reports_come_only_on_the_same_association(bridge_settings, make_bridge):
    bridge = make_bridge(replace(sending_settings(bridge_settings, free_port(), "PACS"), send_storage_commitment=True))
    details = [r.detail for r in bridge.engine.logbook.newest()]
    assert any("storage_commitment is on but receiving is disabled" in d for d in details)


def test_a_restart_while_waiting_sends_the_zip_again_and_asks_again(bridge_settings, make_bridge, tmp_path):
    from .test_send import SendingBridge

    files = make_study(tmp_path / "study", count=2).files
    pacs = CommitmentPacs(bridge_settings.receive_port, lambda asked, instances: None if asked == 1 else {})
    settings = committing_settings(bridge_settings, pacs.port, pacs.aet)
    try:
        first = SendingBridge(settings)
        first.drop(zip_of(files), "restart.zip")
        pacs.wait_asked(1)
        first.stop()  # while it waits for the report: the stop ends the wait
        assert first.engine.outbox is not None and not first.engine.outbox.alive
        assert [p.name for p in first.layout.outbox_work.glob("*/*.zip")] == ["restart.zip"]
        second = make_bridge(settings)
        (done,) = second.wait_done()
    finally:
        pacs.stop()
    assert (done.zip_name, done.status) == ("restart.zip", SUCCESS)
    assert len(pacs.asked) == 2 and all(pacs.stored[uid] == 2 for uid in uids(files))


def test_the_receiver_taking_reports_still_stores_on_the_fast_path(running_bridge, tmp_path):
    from bridge.fast_store import FastStoreDUL

    from .peers import run_storescu

    before = FastStoreDUL.handled
    run_storescu(running_bridge.port, [str(f) for f in make_study(tmp_path / "study", count=2).files])
    assert FastStoreDUL.handled - before == 2  # EVT_N_EVENT_REPORT is bound, and did not switch it off
