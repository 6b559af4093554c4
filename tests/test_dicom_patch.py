"""Cutting the IDs out of a file changes exactly the element's bytes, in every encoding.

Oracle: pydicom writes the same dataset twice, with and without the IDs; our splice of the
first must give the second byte for byte.
"""

import io
import struct
import zlib
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.datadict import tag_for_keyword
from pydicom.uid import DeflatedExplicitVRLittleEndian, ImplicitVRLittleEndian

from bridge.crid import split_crids
from bridge.dicom_patch import dataset_offset, splice_deflated, splice_file
from bridge.instance import read_instance

from .studies import BIG_ENDIAN, CRID_TAG, CT, DEFLATED, template

ID = "1234567890123456"
PATIENT_ID = 0x00100020


def _write(dataset, path: Path, syntax=None) -> bytes:
    if syntax is not None:
        dataset.file_meta.TransferSyntaxUID = syntax
    dataset.save_as(path, enforce_file_format=True)
    return path.read_bytes()


def _spliced(path: Path, tag: int = CRID_TAG) -> bytes:
    header = read_instance(path, tag)
    out = io.BytesIO()
    with open(path, "rb") as source:
        if header.deflated:
            splice_deflated(source, out, header.crid_span, header.crid.kept, dataset_offset(source))
        else:
            splice_file(source, out, header.crid_span, header.crid.kept)
    return out.getvalue()


@pytest.mark.parametrize("sample,syntax", [(CT, None), (CT, ImplicitVRLittleEndian), (BIG_ENDIAN, None)])
@pytest.mark.parametrize("keyword", ["PatientSpeciesDescription", "PatientID", "PatientComments"])
@pytest.mark.parametrize("value,kept", [(f"Main Street 5 CRID#{ID}", "Main Street 5"),
                                         (f"Odd CRID#{ID}", "Odd"), (f"CRID#{ID}", ""),
                                         (f"x CRID#{ID} CRID#{ID[::-1]}", "x"), (f"CRID#{ID} hello", "hello")])
def test_splice_equals_a_file_written_without_the_ids(tmp_path, sample, syntax, keyword, value, kept):
    dataset = template(sample)
    setattr(dataset, keyword, value)
    _write(dataset, tmp_path / "with.dcm", syntax)
    if kept or keyword != "PatientSpeciesDescription":
        setattr(dataset, keyword, kept)  # an empty value keeps the element (length 0)…
    else:
        delattr(dataset, keyword)  # …except a Type 1C element, which may be absent but not empty
    expected = _write(dataset, tmp_path / "without.dcm", syntax)
    assert _spliced(tmp_path / "with.dcm", tag_for_keyword(keyword)) == expected


def _with_group_length(path: Path) -> bytes:
    """The file with a correct legacy (0010,0000) group length inserted (pydicom drops them)."""
    raw = path.read_bytes()
    parsed = dcmread(path)
    group = sorted(t for t in parsed.keys() if t.group == 0x0010)
    first, last = parsed.get_item(group[0]), parsed.get_item(group[-1])
    start = first.value_tell - 8  # all group-0010 elements here have short explicit headers
    end = last.value_tell + last.length
    element = struct.pack("<HH2sHL", 0x0010, 0x0000, b"UL", 4, end - start)
    return raw[:start] + element + raw[start:]


@pytest.mark.parametrize("keyword,value,kept", [("PatientSpeciesDescription", f"Dog CRID#{ID}", "Dog"),
                                                 ("PatientSpeciesDescription", f"CRID#{ID}", None),
                                                 ("PatientID", f"CRID#{ID}", "")])
def test_legacy_group_length_is_corrected(tmp_path, keyword, value, kept):
    dataset = template(CT)
    setattr(dataset, keyword, value)
    _write(dataset, tmp_path / "plain_with.dcm")
    (tmp_path / "with.dcm").write_bytes(_with_group_length(tmp_path / "plain_with.dcm"))
    if kept is None:
        delattr(dataset, keyword)
    else:
        setattr(dataset, keyword, kept)
    _write(dataset, tmp_path / "plain_without.dcm")
    expected = _with_group_length(tmp_path / "plain_without.dcm")
    assert _spliced(tmp_path / "with.dcm", tag_for_keyword(keyword)) == expected


@pytest.mark.parametrize("value,kept", [(f"Cat CRID#{ID}", "Cat"), (f"CRID#{ID}", "")])
def test_deflated_dataset_keeps_its_inflated_bytes(tmp_path, value, kept):
    dataset = template(DEFLATED)
    dataset.PatientID = value
    _write(dataset, tmp_path / "with.dcm", DeflatedExplicitVRLittleEndian)
    dataset.PatientID = kept
    expected = _write(dataset, tmp_path / "without.dcm", DeflatedExplicitVRLittleEndian)
    out = _spliced(tmp_path / "with.dcm", PATIENT_ID)
    with open(tmp_path / "without.dcm", "rb") as handle:
        offset = dataset_offset(handle)
    assert out[:offset] == expected[:offset]
    assert zlib.decompress(out[offset:], -15) == zlib.decompress(expected[offset:], -15)


def test_value_without_ids_is_reported_as_nothing_to_do():
    assert not split_crids(b"Labrador").found_suffix
