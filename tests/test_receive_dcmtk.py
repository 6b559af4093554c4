"""Receiving end to end: DCMTK storescu sends, the bridge zips one ZIP per study.

README: "What happens to a study", "ZIP names".
"""

from __future__ import annotations

import io
import subprocess
import zipfile
from pathlib import Path

import pytest
from pydicom import dcmread

from bridge.layout import INBOX_AUTO, INBOX_MANUAL
from bridge.logbook import FAILED, RECEIVE, WARNING

from .peers import PEER_ENV, dicom_tool, run_storescu, storescu_args
from .studies import (
    CRID_TAG,
    DEFLATED,
    JPEG2000,
    JPEG2000_LOSSLESS,
    JPEG_BASELINE,
    JPEG_LS,
    RLE,
    SR,
    make_study,
    raw_elements,
    transfer_syntax,
)

ID_A = "1234567890123456"
ID_B = "9876543210987654"


def zip_members(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as archive:
        assert archive.testzip() is None
        return {name: archive.read(name) for name in archive.namelist()}


def datasets_by_sop(path: Path):
    return {ds.SOPInstanceUID: ds for ds in (dcmread(io.BytesIO(b)) for b in zip_members(path).values())}


def test_study_with_ids_becomes_one_zip_in_inbox_auto(running_bridge, tmp_path):
    study = make_study(tmp_path / "send", count=5, crid_value=f"Main Street 5 CRID#{ID_A}")
    run_storescu(running_bridge.port, [str(f) for f in study.files])
    running_bridge.wait_routed(1)

    zips = running_bridge.zips(INBOX_AUTO)
    assert [z.name for z in zips] == [
        f"HOLTZMANN, Carsten_1929-05-05_M_2004-07-22_CT_{study.uid}_CRID#{ID_A}.zip"]
    assert running_bridge.zips(INBOX_MANUAL) == []
    received = datasets_by_sop(zips[0])
    assert len(received) == 5
    for sent_path in study.files:
        sent = dcmread(sent_path)
        got = received[sent.SOPInstanceUID]
        assert got.PatientSpeciesDescription == "Main Street 5"
        assert got.PixelData == sent.PixelData
        assert raw_elements(got, leave_out=(CRID_TAG,)) == raw_elements(sent, leave_out=(CRID_TAG,))
    # nothing of the study is left in the spool
    assert list(running_bridge.engine.layout.spool.iterdir()) == []


def test_two_ids_both_named_and_empty_element_removed(running_bridge, tmp_path):
    study = make_study(tmp_path / "send", count=2, crid_value=f"CRID#{ID_A}CRID#{ID_B}")
    run_storescu(running_bridge.port, [str(f) for f in study.files])
    running_bridge.wait_routed(1)
    (zip_path,) = running_bridge.zips(INBOX_AUTO)
    assert zip_path.name.endswith(f"_{study.uid}_CRID#{ID_A}CRID#{ID_B}.zip")
    for dataset in datasets_by_sop(zip_path).values():
        assert CRID_TAG not in dataset
    rows = running_bridge.engine.logbook.newest()
    assert rows[0].crid == f"CRID#{ID_A}CRID#{ID_B}" and rows[0].image_count == 2


def test_study_without_ids_goes_to_inbox_manual(running_bridge, tmp_path):
    study = make_study(tmp_path / "send", count=2, crid_value=None)
    run_storescu(running_bridge.port, [str(f) for f in study.files])
    running_bridge.wait_routed(1)
    assert running_bridge.zips(INBOX_AUTO) == []
    (zip_path,) = running_bridge.zips(INBOX_MANUAL)
    assert zip_path.name == f"HOLTZMANN, Carsten_1929-05-05_M_2004-07-22_CT_{study.uid}.zip"
    sent = {dcmread(f).SOPInstanceUID: f.read_bytes() for f in study.files}
    assert len(datasets_by_sop(zip_path)) == len(sent)


def test_malformed_ids_go_to_manual_with_a_warning(running_bridge, tmp_path):
    study = make_study(tmp_path / "send", count=2, crid_value="Dog CRID#12345")
    run_storescu(running_bridge.port, [str(f) for f in study.files])
    running_bridge.wait_routed(1)
    (zip_path,) = running_bridge.zips(INBOX_MANUAL)
    assert "CRID" not in zip_path.name
    for dataset in datasets_by_sop(zip_path).values():
        assert dataset.PatientSpeciesDescription == "Dog"
    row = running_bridge.engine.logbook.newest()[0]
    assert (row.action, row.status) == (RECEIVE, WARNING)
    assert "malformed" in row.detail and "12345" in row.detail


@pytest.mark.parametrize("sample", [RLE, JPEG_BASELINE, JPEG2000, JPEG2000_LOSSLESS, JPEG_LS, DEFLATED, SR])
def test_compressed_and_other_syntaxes_pass_through_unchanged(running_bridge, tmp_path, sample):
    study = make_study(tmp_path / "send", count=2, sample=sample, crid_value=f"Cat CRID#{ID_A}")
    syntax = transfer_syntax(study.files[0])
    run_storescu(running_bridge.port, [str(f) for f in study.files], transfer_syntax=syntax)
    running_bridge.wait_routed(1)
    (zip_path,) = running_bridge.zips(INBOX_AUTO)
    received = datasets_by_sop(zip_path)
    for sent_path in study.files:
        sent = dcmread(sent_path)
        got = received[sent.SOPInstanceUID]
        assert str(got.file_meta.TransferSyntaxUID) == syntax
        assert got.PatientSpeciesDescription == "Cat"
        if "PixelData" in sent:
            assert got.PixelData == sent.PixelData
        assert raw_elements(got, leave_out=(CRID_TAG,)) == raw_elements(sent, leave_out=(CRID_TAG,))


def _dciodvfy_errors(path: Path) -> set[str]:
    result = subprocess.run([dicom_tool("dciodvfy", "dicom3tools"), str(path)], capture_output=True,
                            text=True, timeout=60)
    return {line.strip() for line in (result.stdout + result.stderr).splitlines() if line.startswith("Error")}


def test_files_without_ids_still_validate_with_dciodvfy(running_bridge, tmp_path):
    study = make_study(tmp_path / "send", count=1, crid_value=f"CRID#{ID_A}")
    study2 = make_study(tmp_path / "send2", count=1, crid_value=f"Main Street 5 CRID#{ID_B}")
    run_storescu(running_bridge.port, [str(study.files[0]), str(study2.files[0])])
    running_bridge.wait_routed(2)
    unpacked = tmp_path / "unpacked"
    for zip_path in running_bridge.zips(INBOX_AUTO):
        with zipfile.ZipFile(zip_path) as archive:
            archive.extractall(unpacked / zip_path.stem[-20:])
    received = {dcmread(p).SOPInstanceUID: p for p in unpacked.rglob("*.dcm")}
    for sent_path in (study.files[0], study2.files[0]):
        got_path = received[dcmread(sent_path).SOPInstanceUID]
        new_errors = _dciodvfy_errors(got_path) - _dciodvfy_errors(sent_path)
        assert not new_errors, new_errors


def test_two_interleaved_studies_over_simultaneous_associations(running_bridge, tmp_path):
    first = make_study(tmp_path / "a", count=20, crid_value=f"CRID#{ID_A}", patient_name="ALPHA^Anna")
    second = make_study(tmp_path / "b", count=20, crid_value=f"CRID#{ID_B}", patient_name="BETA^Bert")
    procs = [subprocess.Popen(storescu_args("CRYPE_DCM", running_bridge.port, [str(f) for f in s.files], "-R"),
                              env=PEER_ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for s in (first, second)]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    running_bridge.wait_routed(2)
    by_patient = {z.name.split("_")[0]: z for z in running_bridge.zips(INBOX_AUTO)}
    assert set(by_patient) == {"ALPHA, Anna", "BETA, Bert"}
    alpha = datasets_by_sop(by_patient["ALPHA, Anna"])
    beta = datasets_by_sop(by_patient["BETA, Bert"])
    assert {str(d.StudyInstanceUID) for d in alpha.values()} == {first.uid} and len(alpha) == 20
    assert {str(d.StudyInstanceUID) for d in beta.values()} == {second.uid} and len(beta) == 20
    assert by_patient["ALPHA, Anna"].name.endswith(f"CRID#{ID_A}.zip")


def test_late_instances_make_a_second_zip_and_leave_the_first_alone(running_bridge, tmp_path):
    study = make_study(tmp_path / "send", count=2, crid_value=f"CRID#{ID_A}")
    run_storescu(running_bridge.port, [str(f) for f in study.files])
    running_bridge.wait_routed(1)
    (first_zip,) = running_bridge.zips(INBOX_AUTO)
    first_bytes = first_zip.read_bytes()
    late = make_study(tmp_path / "late", count=1, crid_value=f"CRID#{ID_A}", study_uid=study.uid, first_number=3)
    run_storescu(running_bridge.port, [str(f) for f in late.files])
    running_bridge.wait_routed(1)
    names = sorted(z.name for z in running_bridge.zips(INBOX_AUTO))
    stem = f"HOLTZMANN, Carsten_1929-05-05_M_2004-07-22_CT_{study.uid}"
    assert names == [f"{stem}-2_CRID#{ID_A}.zip", f"{stem}_CRID#{ID_A}.zip"]
    assert first_zip.read_bytes() == first_bytes
    assert len(zip_members(running_bridge.storage / INBOX_AUTO / names[0])) == 1


def test_same_instance_twice_is_stored_once(running_bridge, tmp_path):
    study = make_study(tmp_path / "send", count=3, crid_value=None)
    files = [str(f) for f in study.files]
    run_storescu(running_bridge.port, files + files[:2])
    running_bridge.wait_routed(1)
    (zip_path,) = running_bridge.zips(INBOX_MANUAL)
    assert len(zip_members(zip_path)) == 3
    assert running_bridge.engine.logbook.newest()[0].image_count == 3


def test_below_free_space_floor_images_are_refused_with_a700(bridge_settings, tmp_path):
    from dataclasses import replace

    from bridge.engine import Engine

    settings = replace(bridge_settings, min_free_mb=10**9)  # more than any disk has
    engine = Engine(settings, bind_address="127.0.0.1")
    engine.start()
    try:
        study = make_study(tmp_path / "send", count=2)
        result = run_storescu(settings.receive_port, [str(f) for f in study.files], check=False, verbose=True)
        assert result.returncode != 0
        assert "refused: outofresources" in (result.stdout + result.stderr).lower()  # DCMTK names 0xA700 so
        assert list(engine.layout.spool.iterdir()) == []
        row = engine.logbook.newest()[0]
        assert row.status == WARNING and "0xA700" in row.detail
    finally:
        engine.stop(grace_seconds=5)


def test_echo_from_dcmtk_succeeds(running_bridge):
    from .peers import dcmtk

    result = subprocess.run([dcmtk("echoscu"), "-aec", "CRYPE_DCM", "127.0.0.1", str(running_bridge.port)],
                            capture_output=True, text=True, timeout=30, env=PEER_ENV)
    assert result.returncode == 0, result.stderr


def test_unreadable_zip_input_goes_to_inbox_failed_with_reason(running_bridge):
    """A spool file that cannot be read fails its study visibly; the files are kept."""
    engine = running_bridge.engine
    folder = engine.layout.spool / "1.2.3~1"
    folder.mkdir()
    (folder / "1.2.3.4.dcm").write_bytes(b"not dicom at all")
    engine.aggregator.recover()
    running_bridge.wait_routed(1)
    failed = engine.layout.inbox_failed / "1.2.3"
    assert (failed / "1.2.3.4.dcm").read_bytes() == b"not dicom at all"
    assert "cannot read" in (failed / "reason.txt").read_text()
    row = engine.logbook.newest()[0]
    assert (row.action, row.status) == (RECEIVE, FAILED)




def test_images_with_different_ids_merge_in_arrival_order_with_a_warning(running_bridge, tmp_path):
    study = make_study(tmp_path / "a", count=3, crid_value=f"CRID#{ID_B}")
    more = make_study(tmp_path / "b", count=2, crid_value=f"CRID#{ID_A}CRID#{ID_B}", study_uid=study.uid,
                      first_number=4)
    run_storescu(running_bridge.port, [str(f) for f in study.files + more.files])
    running_bridge.wait_routed(1)
    (zip_path,) = running_bridge.zips(INBOX_AUTO)
    assert zip_path.name.endswith(f"_{study.uid}_CRID#{ID_B}CRID#{ID_A}.zip")
    assert len(zip_members(zip_path)) == 5
    row = running_bridge.engine.logbook.newest()[0]
    assert row.status == WARNING and "different recipient IDs" in row.detail
