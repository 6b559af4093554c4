"""The fast header walk must agree with pydicom wherever it answers, on every sample file."""

from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file

from bridge.header_scan import scan_header
from bridge.instance import _read_instance_with_pydicom, read_instance, read_study_uid

from .studies import CRID_TAG, CT, make_study

SAMPLES = sorted(Path(get_testdata_file("CT_small.dcm")).parent.glob("*.dcm"))
STUDY_UID = 0x0020000D


def _pydicom_or_none(path, _tag):
    try:
        return dcmread(path, stop_before_pixels=True, force=True)
    except Exception:
        return None


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.name)
def test_walk_agrees_with_pydicom(path):
    dataset = _pydicom_or_none(path, STUDY_UID)
    scan = scan_header(path, {0x00080018, 0x00080060, STUDY_UID, 0x0020000E, 0x00100010})
    if scan is None:
        return  # pydicom answers these
    assert dataset is not None
    for tag in (0x00080018, 0x00080060, STUDY_UID, 0x0020000E):
        expected = str(dataset.get(tag).value if tag in dataset else "").strip()
        assert scan.text(tag) == expected, hex(tag)
    if 0x00100010 in dataset:
        element = scan.elements[0x00100010]
        raw = dcmread(path, stop_before_pixels=True, force=True).get_item(0x00100010)
        if not hasattr(raw, "value_tell"):  # pydicom decodes empty elements on reading
            assert element.length == 0
            return
        assert (element.value_start, element.length, element.value) == (raw.value_tell, raw.length, raw.value)


def _pydicom_reads_header(path) -> bool:
    try:
        _read_instance_with_pydicom(path, 0x00100010)
        return True
    except Exception:
        return False


@pytest.mark.parametrize("path", [p for p in SAMPLES if _pydicom_reads_header(p)], ids=lambda p: p.name)
def test_fast_and_pydicom_instance_headers_match(path):
    assert read_instance(path, 0x00100010) == _read_instance_with_pydicom(path, 0x00100010)


def test_the_walk_answers_common_encodings_including_undefined_length_sequences():
    for name in ("CT_small.dcm", "MR_small_implicit.dcm", "MR_small_bigendian.dcm", "MR_small_RLE.dcm"):
        path = get_testdata_file(name)
        assert scan_header(path, {STUDY_UID}) is not None, name
        assert read_study_uid(path) == str(dcmread(path).StudyInstanceUID)


def test_deflated_is_left_to_pydicom():
    path = get_testdata_file("image_dfl.dcm")
    assert scan_header(path, {STUDY_UID}) is None
    assert read_study_uid(path) == str(dcmread(path).StudyInstanceUID)


def test_missing_study_uid_is_an_error(tmp_path):
    dataset = dcmread(get_testdata_file(CT))
    del dataset.StudyInstanceUID
    dataset.save_as(tmp_path / "x.dcm", enforce_file_format=True)
    with pytest.raises(ValueError, match="Study Instance UID"):
        read_study_uid(tmp_path / "x.dcm")


def test_crid_element_found_by_the_walk(tmp_path):
    study = make_study(tmp_path, count=1, crid_value="Dog CRID#1234567890123456")
    header = read_instance(study.files[0], CRID_TAG)
    assert header.crid.ids == ("1234567890123456",) and header.crid.kept == b"Dog"
    assert header == _read_instance_with_pydicom(study.files[0], CRID_TAG)
