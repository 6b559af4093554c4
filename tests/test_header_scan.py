"""The header walk's quick step over plain elements finds exactly what the element-by-element walk finds."""

from __future__ import annotations

from pathlib import Path

import pydicom.data
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset

from bridge import header_scan
from bridge.header_scan import SCAN_BYTES, dataset_start, peek_dataset, scan_header
from bridge.instance import image_fact_tags

from .studies import make_study

SAMPLES = sorted(p for folder in ("test_files", "charset_files")
                 for p in (Path(pydicom.data.__file__).parent / folder).glob("*.dcm"))
WANTED = [
    {0x00080018, 0x0020000D},  # the receiver's identity
    set(image_fact_tags(0x00102201)) | {0x00080018, 0x0020000D},  # + the Pending view's, CRID in (0010,2201)
    {0x00080060, 0x0020000E, 0x00204000},  # the zipper's, CRID in Image Comments
    {0x00280010, 0x00280011},  # deep in the header
]


def _without_quick_step(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(header_scan._Walker, "pass_plain", lambda self, pos, wanted, last: (pos, -1))


def _syntax(raw: bytes) -> str | None:
    found = header_scan.file_meta_from_head(raw[:SCAN_BYTES])
    return None if found is None else found[2]


def test_samples_are_there():
    assert len(SAMPLES) > 80


def _answers(wanted: set[int]) -> list[object]:
    """What the walks say about every sample: the file's header, and its dataset cut every 97 bytes."""
    answers: list[object] = []
    for path in SAMPLES:
        raw = path.read_bytes()
        start, syntax = dataset_start(raw[:SCAN_BYTES]), _syntax(raw)
        answers.append(scan_header(path, wanted))
        if start is not None and syntax is not None:
            data = raw[start:start + SCAN_BYTES]
            answers.extend(peek_dataset(data[:cut], syntax, frozenset(wanted)) for cut in range(0, len(data), 97))
    return answers


@pytest.mark.parametrize("wanted", WANTED, ids=["identity", "pending", "zipper", "deep"])
def test_the_quick_step_changes_no_answer(wanted, monkeypatch):
    """Every pydicom sample, whole and cut at many places: the same elements, group lengths and certainty."""
    quick = _answers(wanted)
    _without_quick_step(monkeypatch)
    slow = _answers(wanted)
    assert len(quick) == len(slow) > 1000
    assert quick == slow
    assert sum(1 for found in quick if found is not None) > 500


def test_the_outbox_plan_reads_further_when_the_header_goes_beyond_the_first_bytes(tmp_path):
    """plan() inflates 4 kB of each member first; a long file meta or a long element before the
    Modality is read to 16 kB, so the file meta and the Modality are found as before."""
    from bridge.safe_unzip import FIRST_HEAD_BYTES, ZipUnpacker

    from .test_send import zip_of  # imported here: test_send is a large module

    def long_meta(ds: Dataset) -> None:
        ds.file_meta.add_new(0x00020102, "OB", b"\x01" * (FIRST_HEAD_BYTES + 100))  # Private Information

    def long_image_type(ds: Dataset) -> None:
        ds.ImageType = ["ORIGINAL", "PRIMARY", *(["AXIAL"] * (FIRST_HEAD_BYTES // 6))]

    files = [make_study(tmp_path / name, count=1, modality="MR", customize=change).files[0]
             for name, change in (("plain", None), ("meta", long_meta), ("image_type", long_image_type))]
    archive = tmp_path / "study.zip"
    archive.write_bytes(zip_of(files))
    unpacker = ZipUnpacker(archive, tmp_path / "work")
    try:
        metas = unpacker.plan()
    finally:
        unpacker.close()
    assert [(m.sop_class, m.sop_instance, m.transfer_syntax) for m in metas] == [
        (str(ds.SOPClassUID), str(ds.SOPInstanceUID), str(ds.file_meta.TransferSyntaxUID))
        for ds in map(dcmread, files)]
    assert [unpacker.modalities[m.path] for m in metas] == ["MR", "MR", "MR"]
    assert dcmread(files[1]).file_meta.FileMetaInformationGroupLength > FIRST_HEAD_BYTES  # the cases are real
    assert files[2].read_bytes().index(b"\x08\x00\x60\x00CS") > FIRST_HEAD_BYTES
