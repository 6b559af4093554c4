"""The handler's fast Study-UID scan must agree with pydicom on every sample file it answers."""

from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file

from bridge.instance import read_study_uid, scan_study_uid

SAMPLES = sorted(Path(get_testdata_file("CT_small.dcm")).parent.glob("*.dcm"))


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.name)
def test_fast_scan_agrees_with_pydicom(path):
    try:
        expected = str(dcmread(path, stop_before_pixels=True, force=True).get("StudyInstanceUID", "") or "").strip()
    except Exception:
        expected = None
    fast = scan_study_uid(path)
    if fast is not None:
        assert fast == expected


def test_fast_scan_answers_the_common_encodings():
    for name in ("CT_small.dcm", "MR_small_implicit.dcm", "MR_small_bigendian.dcm", "MR_small_RLE.dcm"):
        path = get_testdata_file(name)
        assert scan_study_uid(path) == str(dcmread(path).StudyInstanceUID)


def test_deflated_falls_back_to_pydicom():
    path = get_testdata_file("image_dfl.dcm")
    assert scan_study_uid(path) is None
    assert read_study_uid(path) == str(dcmread(path).StudyInstanceUID)


def test_missing_study_uid_is_an_error(tmp_path):
    dataset = dcmread(get_testdata_file("CT_small.dcm"))
    del dataset.StudyInstanceUID
    dataset.save_as(tmp_path / "x.dcm", enforce_file_format=True)
    with pytest.raises(ValueError, match="Study Instance UID"):
        read_study_uid(tmp_path / "x.dcm")
