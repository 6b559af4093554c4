"""The Pending view takes what the receiver peeked while each image streamed in, and reads only the rest.

The values it shows must be exactly what reading the files gives (``read_instance`` and
``read_study_record``, the same CRID parsing): checked on pydicom's real files in several transfer
syntaxes and character sets, with the CRID element present, absent, empty and after the peeked bytes.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pydicom.data
import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file

from bridge import engine as engine_module
from bridge import receiver
from bridge.aggregator import PendingStudy
from bridge.crid import split_crids
from bridge.events import InstanceStored
from bridge.fast_store import IDENTITY_TAGS
from bridge.header_scan import SCAN_BYTES, dataset_start, peek_dataset
from bridge.instance import ImageFacts, facts_from_peek, image_fact_tags, read_image_facts
from bridge.pending_view import PendingDescriber

from .conftest import free_port, start_running_bridge
from .peers import run_storescu
from .studies import BIG_ENDIAN, CRID_TAG, CT, IMPLICIT, JPEG2000, RLE, SR, make_study

SYNTAX_FILES = [CT, IMPLICIT, BIG_ENDIAN, RLE, JPEG2000, SR, "JPGExtended.dcm", "MR_small_jpeg_ls_lossless.dcm"]
CHARSET_FILES = ["chrH31.dcm", "chrX1.dcm", "chrFrenMulti.dcm", "chrRuss.dcm", "chrSQEncoding.dcm"]
CRID = "CRID#1234567890123456"


def _copy(name: str, folder: Path, crid_value: str | None) -> Path:
    """A pydicom sample in its own transfer syntax, with the CRID element set (or absent: None)."""
    charset_file = Path(pydicom.data.__file__).parent / "charset_files" / name
    dataset = dcmread(charset_file if charset_file.exists() else get_testdata_file(name))
    if crid_value is not None:
        dataset.PatientSpeciesDescription = crid_value
    path = folder / f"{len(list(folder.iterdir())):02d}-{name}"
    dataset.save_as(path)
    return path


def _peek(path: Path, length: int = SCAN_BYTES, crid_tag: int | None = CRID_TAG):
    """The fast path's walk of the first ``length`` dataset bytes (as if its first fragment ended there)."""
    raw = path.read_bytes()
    start = dataset_start(raw[:SCAN_BYTES])
    assert start is not None
    syntax = str(dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID)
    peek = peek_dataset(raw[start:start + length], syntax, IDENTITY_TAGS | image_fact_tags(crid_tag))
    assert peek is not None
    return peek


@pytest.mark.parametrize("name", SYNTAX_FILES + CHARSET_FILES)
@pytest.mark.parametrize("crid_value", [f"Canis {CRID}", f"{CRID} CRID#12", "", None],
                         ids=["crid", "malformed", "empty", "absent"])
def test_facts_peeked_are_what_reading_the_file_gives(name, crid_value, tmp_path):
    path = _copy(name, tmp_path, crid_value)
    for with_study in (True, False):
        handed = facts_from_peek(_peek(path), CRID_TAG, with_study)
        assert handed is not None, "a small file's header is settled by its first 64 kB"
        assert handed == read_image_facts(path, CRID_TAG, with_study)
    handed = facts_from_peek(_peek(path), CRID_TAG, with_study=True)
    assert handed is not None and handed.patient_name is not None  # the study's values came with it
    assert (handed.crid is not None and bool(handed.crid.found_suffix)) == bool(crid_value)


def test_facts_without_a_crid_tag_configured_are_what_reading_the_file_gives(tmp_path):
    path = _copy(CT, tmp_path, CRID)
    handed = facts_from_peek(_peek(path, crid_tag=None), None, with_study=True)
    assert handed is not None and handed.crid is None
    assert handed == read_image_facts(path, None, with_study=True)


@pytest.mark.parametrize("name", [CT, IMPLICIT, BIG_ENDIAN])
def test_a_crid_element_not_wholly_in_the_first_fragment_is_not_handed(name, tmp_path):
    """The peek says it cannot settle the CRID element: nothing is handed, the view reads the file."""
    path = _copy(name, tmp_path, f"Canis {CRID}")
    element = _peek(path).elements[CRID_TAG]
    for cut in (element.header_start + 2, element.value_start, element.value_start + element.length - 1):
        assert facts_from_peek(_peek(path, cut), CRID_TAG, with_study=False) is None, cut
    whole = facts_from_peek(_peek(path, element.value_start + element.length), CRID_TAG, with_study=False)
    assert whole == read_image_facts(path, CRID_TAG, with_study=False)  # ends right after it: settled


def test_facts_for_a_crid_tag_not_peeked_are_not_handed(tmp_path):
    """The CRID tag changed (a live setting) between the peek and the handler: nothing is guessed."""
    path = _copy(CT, tmp_path, CRID)
    assert facts_from_peek(_peek(path, crid_tag=0x00081030), CRID_TAG, with_study=True) is None
    assert facts_from_peek(_peek(path), 0x7FE10010, with_study=True) is None  # after the pixel data: read it


def test_study_values_not_settled_leave_the_patient_name_to_be_read(tmp_path):
    path = _copy(CT, tmp_path, CRID)
    name = _peek(path).elements[0x00100010]
    handed = facts_from_peek(_peek(path, name.value_start + 1), None, with_study=True)
    assert handed is not None and handed.patient_name is None and handed.modality == "CT"


def _study(folder: Path, files: list[Path]) -> PendingStudy:
    return PendingStudy(key="1.2.3", folder=folder, last_arrival=0.0, files={p.name: p for p in files})


def test_the_view_shows_what_was_handed_and_reads_only_the_rest(tmp_path):
    study = make_study(tmp_path / "spool", count=4, crid_value=CRID)  # CT, HOLTZMANN^Carsten, 20040722
    files = sorted(study.files)
    view = PendingDescriber(lambda: CRID_TAG)
    other = "CRID#6543210987654321"
    view.consider(InstanceStored("1.2.3", 1, file=str(files[0]),
                                 facts=ImageFacts(CRID_TAG, "MR", None, "HANDED^Name", "19990101")))
    view.consider(InstanceStored("1.2.3", 2, file=str(files[1]),
                                 facts=ImageFacts(CRID_TAG, "MR", split_crids(other.encode("ascii")))))
    view.consider(InstanceStored("1.2.3", 3, file=str(files[2]),
                                 facts=ImageFacts(0x00081030, "US", None)))  # another CRID tag: read the file
    (row,) = view.describe([_study(tmp_path / "spool", files)], timeout=60, now=0)
    assert view.files_read == 2  # files[2] (stale tag) and files[3] (nothing handed)
    assert (row.patient_name, row.study_date) == ("HANDED, Name", "1999-01-01")
    assert row.modality == "CT-MR" and row.crids == other + CRID  # order of first appearance
    (again,) = view.describe([_study(tmp_path / "spool", files)], timeout=60, now=0)
    assert again == row and view.files_read == 2  # each file looked at once


def test_the_view_reads_the_study_values_when_the_first_image_did_not_bring_them(tmp_path):
    study = make_study(tmp_path / "spool", count=2, crid_value=CRID)
    files = sorted(study.files)
    view = PendingDescriber(lambda: CRID_TAG)
    for number, path in enumerate(files, 1):
        view.consider(InstanceStored("1.2.3", number, file=str(path), facts=ImageFacts(CRID_TAG, "CT", None)))
    (row,) = view.describe([_study(tmp_path / "spool", files)], timeout=60, now=0)
    assert (row.patient_name, row.study_date) == ("HOLTZMANN, Carsten", "2004-07-22")
    assert view.files_read == 1


def _long_private_element(dataset) -> None:
    block = dataset.private_block(0x0009, "DICOMBRIDGE TEST", create=True)
    block.add_new(0x10, "OB", b"x" * 70_000)


def _receive_and_describe(settings, monkeypatch, files: list[Path]):
    """Receive ``files`` with DCMTK storescu; the Pending row and how many files the view opened."""
    monkeypatch.setattr(engine_module.StatusFileWriter, "start", lambda self: None)  # no second reader of the view
    running = start_running_bridge(replace(settings, receive_timeout_seconds=3600))
    try:
        run_storescu(running.port, [str(f) for f in files])  # every image answered: its event is published
        (row,) = running.engine.status().pending
        return row, running.engine.pending_view.files_read
    finally:
        running.engine.stop(grace_seconds=2)


@pytest.mark.peers
def test_receiving_a_study_opens_no_spool_file_for_the_pending_view(bridge_settings, tmp_path, monkeypatch):
    """Images that came by the fast path are shown from what was peeked; the one whose CRID element is past
    the first 64 kB (a long private element before it) is read, as are all of pynetdicom's."""
    study = make_study(tmp_path / "s", count=3, crid_value=CRID)
    later = make_study(tmp_path / "l", count=1, study_uid=study.uid, first_number=4,
                       crid_value="CRID#6543210987654321",
                       customize=_long_private_element)
    absent = make_study(tmp_path / "a", count=1, study_uid=study.uid, first_number=5)  # no CRID element
    files = study.files + later.files + absent.files
    fast_row, fast_reads = _receive_and_describe(bridge_settings, monkeypatch, files)
    assert fast_reads == 1
    assert (fast_row.patient_name, fast_row.study_date, fast_row.modality, fast_row.images) == (
        "HOLTZMANN, Carsten", "2004-07-22", "CT", 5)
    assert fast_row.crids == CRID + "CRID#6543210987654321"
    monkeypatch.setattr(receiver.Receiver, "fast_path", False)  # pynetdicom's path: nothing peeked
    slow_row, slow_reads = _receive_and_describe(replace(bridge_settings, storage_folder=tmp_path / "slow",
                                                         receive_port=free_port()),
                                                 monkeypatch, files)
    assert slow_reads == 5
    assert replace(slow_row, key=fast_row.key, seconds_left=0, sender="") == replace(fast_row, seconds_left=0,
                                                                                       sender="")
