"""Storage commitment against Orthanc: it reports on a new association to our listener."""

from __future__ import annotations

from pathlib import Path

import pytest
from pynetdicom import AE, evt

from bridge.commitment import CommitmentError, CommitmentLedger, accept_reports, request_commitment
from bridge.sender import PacsTarget, read_meta

from .conftest import free_port
from .pacs import Orthanc
from .peers import run_storescu
from .studies import make_study

pytestmark = pytest.mark.peers

OUR_AET = "BRIDGE_SC"


@pytest.fixture
def report_listener():
    """A receiving AE as the bridge's receiver sets it up for reports, with a ledger."""
    ledger = CommitmentLedger()
    ae = AE(ae_title=OUR_AET)
    accept_reports(ae)
    port = free_port()
    server = ae.start_server(("127.0.0.1", port), block=False,
                             evt_handlers=[(evt.EVT_N_EVENT_REPORT, ledger.handle_event_report)])
    try:
        yield ledger, port
    finally:
        server.shutdown()


def _orthanc_knowing_us(tmp_path: Path, port: int) -> Orthanc:
    return Orthanc(tmp_path / "orthanc", DicomModalities={"bridge": [OUR_AET, "127.0.0.1", port]})


def test_orthanc_commits_what_it_stored_and_fails_what_it_does_not_have(tmp_path, report_listener):
    ledger, listener_port = report_listener
    orthanc = _orthanc_knowing_us(tmp_path, listener_port)
    try:
        study = make_study(tmp_path / "study", count=3)
        stored = run_storescu(orthanc.port, [str(f) for f in study.files], ae_called=orthanc.aet)
        assert stored.returncode == 0, stored.stderr
        metas = [read_meta(f) for f in study.files]
        instances = [(m.sop_class, m.sop_instance) for m in metas] + [(metas[0].sop_class, "1.2.3.999.1")]
        target = PacsTarget("127.0.0.1", orthanc.port, orthanc.aet, OUR_AET)
        transaction = request_commitment(target, instances, ledger, report_wait_seconds=0.5)
        result = ledger.wait(transaction, timeout_seconds=60)
        assert result is not None, "Orthanc sent no N-EVENT-REPORT"
        assert result.committed == {m.sop_instance for m in metas}
        assert set(result.failed) == {"1.2.3.999.1"} and "0x0112" in result.failed["1.2.3.999.1"]
        assert result.missing({uid for _, uid in instances}) == set()
    finally:
        orthanc.stop()


def test_a_pacs_without_storage_commitment_is_a_clear_error(tmp_path):
    from .pacs import StoreSCP
    scp = StoreSCP(tmp_path / "scp")
    try:
        with pytest.raises(CommitmentError, match="storage commitment"):
            request_commitment(PacsTarget("127.0.0.1", scp.port, scp.aet, OUR_AET), [("1.2", "1.2.3")],
                               CommitmentLedger(), report_wait_seconds=0.1)
    finally:
        scp.stop()


def test_a_report_for_an_unknown_transaction_is_ignored():
    from bridge.commitment import CommitmentResult
    ledger = CommitmentLedger()
    assert not ledger.deliver(CommitmentResult("1.2.3", frozenset()))
    ledger.open("1.2.4")
    assert ledger.deliver(CommitmentResult("1.2.4", frozenset({"9"})))
    assert ledger.wait("1.2.4", 1).committed == {"9"}
    assert ledger.wait("1.2.5", 0.05) is None
