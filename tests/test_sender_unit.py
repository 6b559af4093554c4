"""Sender rules that need a PACS we can make misbehave: pynetdicom's own SCP (unit level)."""

from pathlib import Path

import pytest
from pynetdicom import AE, AllStoragePresentationContexts, evt

from bridge.sender import (
    FileMeta,
    PacsTarget,
    SendReport,
    TransientSendError,
    batches_by_context,
    contexts_for,
    describe_status,
    read_meta,
    send_files,
)

from .conftest import free_port
from .studies import make_study


def test_batches_never_need_more_than_128_contexts():
    metas = [FileMeta(Path(f"{n}.dcm"), f"1.2.{n % 200}", f"9.{n}", "1.2.840.10008.1.2.1") for n in range(1000)]
    batches = batches_by_context(metas)
    assert len(batches) == 4  # 200 pairs, each with its own syntax and a fallback context: 400 contexts
    assert all(sum(len(contexts_for(*pair)) for pair in {(m.sop_class, m.transfer_syntax) for m in b}) <= 128
               for b in batches)
    assert sorted(m.sop_instance for b in batches for m in b) == sorted(m.sop_instance for m in metas)


@pytest.fixture
def scp_answering():
    servers = []

    def start(status: int) -> int:
        ae = AE(ae_title="FAKEPACS")
        for cx in AllStoragePresentationContexts:
            ae.add_supported_context(cx.abstract_syntax, ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"])
        port = free_port()
        servers.append(ae.start_server(("127.0.0.1", port), block=False,
                                       evt_handlers=[(evt.EVT_C_STORE, lambda event: status)]))
        return port

    yield start
    for server in servers:
        server.shutdown()


@pytest.mark.parametrize("status,stored", [(0x0000, True), (0xB000, True), (0xB007, True),
                                           (0xA900, False), (0xC000, False)])
def test_warning_statuses_count_as_stored_and_failures_are_final(scp_answering, tmp_path, status, stored):
    port = scp_answering(status)
    metas = [read_meta(p) for p in make_study(tmp_path, count=2).files]
    report = send_files(PacsTarget("127.0.0.1", port, "FAKEPACS", "CRYPE_DCM"), metas, SendReport())
    assert (len(report.delivered) == 2) is stored
    assert (len(report.failed) == 2) is not stored
    if not stored:
        assert f"0x{status:04X}" in next(iter(report.failed.values()))


def test_out_of_resources_is_worth_another_try(scp_answering, tmp_path):
    port = scp_answering(0xA700)
    metas = [read_meta(p) for p in make_study(tmp_path, count=2).files]
    report = SendReport()
    with pytest.raises(TransientSendError, match="2 image\\(s\\) not stored yet: .*0xA700 out of resources"):
        send_files(PacsTarget("127.0.0.1", port, "FAKEPACS", "CRYPE_DCM"), metas, report)
    assert len(report.deferred) == 2 and not report.failed and not report.delivered


def test_status_texts():
    assert describe_status(0xA700) == "0xA700 out of resources"
    assert describe_status(0xA7FE) == "0xA7FE out of resources"
    assert describe_status(0xC123) == "0xC123 cannot understand"
    assert describe_status(0x0122) == "0x0122 SOP class not supported"
    assert describe_status(0xFE00) == "0xFE00 unknown status"
