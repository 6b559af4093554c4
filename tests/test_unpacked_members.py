"""Members of an outbox ZIP handed to the sender in memory (bridge.safe_unzip.UnpackedMembers)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from bridge import safe_unzip
from bridge.safe_unzip import UnpackedMembers, ZipRejected, ZipUnpacker

from .studies import make_study
from .test_send import zip_of


@pytest.fixture
def study_zip(tmp_path: Path) -> tuple[Path, list[Path]]:
    files = make_study(tmp_path / "study", count=6, modality="MR").files
    path = tmp_path / "study.zip"
    path.write_bytes(zip_of(files))
    return path, files


def unpack_in_background(unpacker: ZipUnpacker, members: UnpackedMembers) -> threading.Thread:
    def run() -> None:
        try:
            unpacker.extract_all(members)
            members.finish()
        except (ZipRejected, OSError) as err:
            members.finish(err)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_members_reach_the_sender_in_memory_byte_for_byte_and_the_first_on_disk(study_zip, tmp_path):
    zip_path, files = study_zip
    unpacker = ZipUnpacker(zip_path, tmp_path / "work")
    metas = unpacker.plan()
    members = UnpackedMembers(unpacker)
    thread = unpack_in_background(unpacker, members)
    handed = [members.take(meta) for meta in metas]
    thread.join(30)
    assert handed[0] is None and metas[0].path.read_bytes() == files[0].read_bytes()  # the log book reads it
    assert [data for data in handed[1:]] == [f.read_bytes() for f in files[1:]]
    assert not any(meta.path.exists() for meta in metas[1:])  # never written to disk
    assert set(unpacker.modalities.values()) == {"MR"}  # read from the heads, for the log book


def test_a_sender_that_stops_taking_never_stalls_the_unpacking(study_zip, tmp_path, monkeypatch):
    zip_path, files = study_zip
    monkeypatch.setattr(safe_unzip, "MEMORY_BUDGET", len(files[1].read_bytes()) + 1)  # room for one member
    monkeypatch.setattr(safe_unzip, "SPILL_AFTER_SECONDS", 0.05)
    unpacker = ZipUnpacker(zip_path, tmp_path / "work")
    metas = unpacker.plan()
    members = UnpackedMembers(unpacker)
    thread = unpack_in_background(unpacker, members)
    thread.join(30)  # nobody takes anything: the members that found no room went to disk
    assert not thread.is_alive()
    on_disk = [meta for meta in metas if meta.path.exists()]
    assert len(on_disk) == len(metas) - 1  # one member in memory, within the budget
    assert [members.take(meta) for meta in metas].count(None) == len(metas) - 1
    assert all(meta.path.read_bytes() == source.read_bytes() for meta, source in zip(metas, files, strict=True)
               if meta.path.exists())


def test_a_member_taken_but_not_delivered_is_unpacked_again_for_the_next_try(study_zip, tmp_path):
    zip_path, files = study_zip
    unpacker = ZipUnpacker(zip_path, tmp_path / "work")
    metas = unpacker.plan()
    members = UnpackedMembers(unpacker)
    unpack_in_background(unpacker, members).join(30)
    assert members.take(metas[2]) == files[2].read_bytes()  # the association then broke: the bytes are gone
    assert members.take(metas[2]) is None  # the next try: from its file, unpacked again from the ZIP
    assert metas[2].path.read_bytes() == files[2].read_bytes()
    assert not metas[2].path.with_suffix(".part").exists()


def test_a_member_the_sender_kept_in_its_file_is_not_unpacked_again(study_zip, tmp_path, monkeypatch):
    from bridge.layout import write_whole

    zip_path, _files = study_zip
    unpacker = ZipUnpacker(zip_path, tmp_path / "work")
    metas = unpacker.plan()
    members = UnpackedMembers(unpacker)
    unpack_in_background(unpacker, members).join(30)
    data = members.take(metas[3])
    assert data is not None
    write_whole(metas[3].path, data)
    monkeypatch.setattr(ZipUnpacker, "unpack_again", lambda self, meta: pytest.fail("unpacked again"))
    assert members.take(metas[3]) is None and metas[3].path.read_bytes() == data


def test_a_damaged_member_fails_every_sender_waiting_for_it(tmp_path):
    from .test_outbox_robust import damage, deflated_member

    zip_path = tmp_path / "damaged.zip"
    zip_path.write_bytes(damage(deflated_member(tmp_path), late=True))  # its head reads well, its end does not
    unpacker = ZipUnpacker(zip_path, tmp_path / "work")
    (meta,) = unpacker.plan()
    members = UnpackedMembers(unpacker)
    unpack_in_background(unpacker, members)
    with pytest.raises(ZipRejected, match="damaged.dcm"):
        members.take(meta)


def test_an_outbox_zip_goes_to_storescp_through_the_fast_path_from_memory(bridge_settings, make_bridge, tmp_path):
    from pydicom import dcmread

    from bridge.fast_send import FastSendDUL
    from bridge.logbook import SUCCESS

    from .pacs import StoreSCP
    from .test_send import sending_settings

    files = make_study(tmp_path / "study", count=5, modality="MR").files
    scp = StoreSCP(tmp_path / "scp")
    try:
        bridge = make_bridge(sending_settings(bridge_settings, scp.port, scp.aet))
        sent_before = FastSendDUL.sent
        bridge.drop(zip_of(files))
        (done,) = bridge.wait_done()
    finally:
        scp.stop()
    assert done.status == SUCCESS
    assert FastSendDUL.sent - sent_before == len(files)
    received = {ds.SOPInstanceUID: ds for ds in (dcmread(p) for p in scp.folder.iterdir())}  # storescp re-encodes
    sources = {ds.SOPInstanceUID: ds for ds in (dcmread(f) for f in files)}
    assert received.keys() == sources.keys()
    assert all(received[uid].PixelData == sources[uid].PixelData and received[uid].PatientName ==
               sources[uid].PatientName for uid in sources)
    row = bridge.engine.logbook.newest()[0]
    assert row.modality == "MR"  # the log book's columns, though only the first image was ever on disk
    assert list(bridge.layout.outbox_work.iterdir()) == []


def test_a_member_larger_than_the_memory_limit_goes_to_disk(study_zip, tmp_path, monkeypatch):
    zip_path, files = study_zip
    monkeypatch.setattr(safe_unzip, "MEMORY_MEMBER_MAX", len(files[2].read_bytes()) - 1)  # every member too big
    unpacker = ZipUnpacker(zip_path, tmp_path / "work")
    metas = unpacker.plan()
    members = UnpackedMembers(unpacker)
    unpack_in_background(unpacker, members).join(30)
    assert [members.take(meta) for meta in metas] == [None] * len(metas)
    assert [meta.path.read_bytes() for meta in metas] == [f.read_bytes() for f in files]
