"""Recipient IDs and ZIP names end to end (issue 11, items 6, 7, 8, 11).

DCMTK ``storescu`` sends modified copies of pydicom's real files to a running bridge; each test
checks the inbox, the ZIP's name, the log-book row, and that no recipient-ID text is left in
any byte of any ZIP member (deflated datasets are inflated first).
"""

from __future__ import annotations

import io
import re
import zipfile
import zlib
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import get_charset_files
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from bridge.aggregator import safe_key
from bridge.dicom_patch import DEFLATED_TS, dataset_offset
from bridge.layout import INBOX_AUTO, INBOX_MANUAL
from bridge.logbook import RECEIVE, SUCCESS, WARNING, LogEntry
from bridge.settings import load_settings

from .conftest import RunningBridge, free_port, start_running_bridge, write_config
from .peers import dciodvfy_errors, run_storescu
from .studies import CT, DEFLATED, make_study, transfer_syntax

ID_A, ID_B = "1234567890123456", "9876543210987654"
SHORT_ID = ID_A[:-1]


def _members(zip_path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(zip_path) as archive:
        assert archive.testzip() is None
        return {name: archive.read(name) for name in archive.namelist()}


def _plain_members(zip_path: Path) -> dict[str, bytes]:
    """Every member's bytes; a deflated dataset inflated, so a text search sees its values."""
    members = {}
    for name, data in _members(zip_path).items():
        if DEFLATED_TS.encode() in data[:4096]:
            offset = dataset_offset(io.BytesIO(data))
            data = data[:offset] + zlib.decompress(data[offset:], -zlib.MAX_WBITS)
        members[name] = data
    return members


def assert_no_recipient_id_text(zip_path: Path, *ids: str) -> None:
    assert "crid#" not in zip_path.name.lower() or zip_path.parent.name == INBOX_AUTO
    for name, data in _plain_members(zip_path).items():
        assert re.search(rb"(?i)crid#", data) is None, name
        for crid in ids:
            assert crid[:12].encode() not in data, (name, crid)


def _element_values(zip_path: Path, keyword: str) -> set[str]:
    return {str(dcmread(io.BytesIO(data)).get(keyword, "<absent>")) for data in _members(zip_path).values()}


def _row_for(bridge: RunningBridge, zip_path: Path) -> LogEntry:
    (row,) = [row for row in bridge.engine.logbook.newest() if row.target == str(zip_path)]
    assert row.action == RECEIVE
    return row


def _zip_of(bridge: RunningBridge, inbox: str, study_uid: str) -> Path:
    (path,) = [p for p in bridge.zips(inbox) if f"_{study_uid}" in p.name]
    return path


def _bridge_with_crid_tag(tmp_path: Path, group: str, element: str) -> RunningBridge:
    config = write_config(tmp_path / "config.toml", general__storage_folder=str(tmp_path / "store"),
                          general__min_free_mb=0, receive__port=free_port(), receive__timeout_seconds=1,
                          receive__crid_tag_group=group, receive__crid_tag_element=element)
    return start_running_bridge(load_settings(config))


# -- item 6: the grammar ----------------------------------------------------------------------
GRAMMAR_CASES = [
    # value in the element, inbox, text the element keeps, name suffix, words the warning has
    (f"x CRID#{ID_A} CRID#{ID_B}", INBOX_AUTO, "x", f"_CRID#{ID_A}CRID#{ID_B}", ()),
    (f"CRID#{ID_A}\tCRID#{ID_B}", INBOX_AUTO, "", f"_CRID#{ID_A}CRID#{ID_B}", ()),
    (f"CRID#{ID_A} hello", INBOX_MANUAL, "hello", "", ("not at the end",)),
    (f"a CRID#{ID_A} b CRID#{ID_B}", INBOX_MANUAL, "a b", "", ("not at the end",)),
    (f"x CRID#{SHORT_ID}", INBOX_MANUAL, "x", "", ("16 digits", SHORT_ID)),
    (f"crid#{ID_A}", INBOX_MANUAL, "", "", ("upper-case",)),
    (f"Dog CRID#{ID_A}7", INBOX_MANUAL, "Dog", "", ("16 digits",)),
]


@pytest.mark.parametrize("sample", [CT, DEFLATED])
def test_every_recipient_id_fragment_leaves_the_files_and_only_clean_ids_route(running_bridge, tmp_path, sample):
    studies = [make_study(tmp_path / f"s{number}", count=2, sample=sample, crid_value=case[0],
                          patient_name=f"CASE^{number}") for number, case in enumerate(GRAMMAR_CASES)]
    files = [str(f) for study in studies for f in study.files]
    run_storescu(running_bridge.port, files, transfer_syntax=transfer_syntax(studies[0].files[0]))
    running_bridge.wait_routed(len(studies))

    for study, (value, inbox, kept, suffix, warning_words) in zip(studies, GRAMMAR_CASES, strict=True):
        zip_path = _zip_of(running_bridge, inbox, study.uid)
        assert zip_path.name.endswith(f"_{study.uid}{suffix}.zip"), value
        assert_no_recipient_id_text(zip_path, ID_A, ID_B, SHORT_ID)
        # (0010,2201) is Type 1C: left empty, it is removed rather than kept empty
        assert _element_values(zip_path, "PatientSpeciesDescription") == {kept or "<absent>"}, value
        row = _row_for(running_bridge, zip_path)
        assert row.status == (WARNING if warning_words else SUCCESS), (value, row.detail)
        assert row.crid == suffix.removeprefix("_")
        assert all(word in row.detail for word in warning_words), (value, row.detail)


# -- item 7: at most five recipients ----------------------------------------------------------
@pytest.mark.parametrize("distinct", [6, 10])
def test_more_than_five_recipients_in_a_study_go_to_manual_stripped(running_bridge, tmp_path, distinct):
    ids = [f"{number:016d}" for number in range(1, distinct + 1)]
    pairs = [ids[i : i + 2] for i in range(0, distinct, 2)]  # each image: two IDs, all different
    first = make_study(tmp_path / "0", count=1, crid_value="Dog " + " ".join(f"CRID#{i}" for i in pairs[0]))
    for number, pair in enumerate(pairs[1:], start=1):
        make_study(tmp_path / str(number), count=1, study_uid=first.uid, first_number=number + 1,
                   crid_value="Dog " + "".join(f"CRID#{i}" for i in pair))
    run_storescu(running_bridge.port, [str(f) for f in sorted(tmp_path.rglob("*.dcm"))])
    running_bridge.wait_routed(1)

    assert running_bridge.zips(INBOX_AUTO) == []
    (zip_path,) = running_bridge.zips(INBOX_MANUAL)
    assert zip_path.name == f"HOLTZMANN, Carsten_1929-05-05_M_2004-07-22_CT_{first.uid}.zip"
    assert len(_plain_members(zip_path)) == len(pairs)
    assert_no_recipient_id_text(zip_path, *ids)
    assert _element_values(zip_path, "PatientSpeciesDescription") == {"Dog"}
    row = _row_for(running_bridge, zip_path)
    assert row.status == WARNING and f"{distinct} distinct recipient IDs" in row.detail and not row.crid


def test_crid_text_left_in_another_element_sends_the_study_to_manual(running_bridge, tmp_path):
    """The IDs are cut from the configured element only; a copy elsewhere (here the PACS kept the
    old address in Original Attributes, and a description) must not go out unnoticed."""

    def copy_elsewhere(dataset: Dataset) -> None:
        original = Dataset()
        original.PatientSpeciesDescription = f"Dog CRID#{ID_A}"
        modified = Dataset()
        modified.ModifiedAttributesSequence = [original]
        modified.ModifyingSystem = "PACS"
        dataset.OriginalAttributesSequence = [modified]

    study = make_study(tmp_path / "s", count=2, crid_value=f"Dog CRID#{ID_A}", customize=copy_elsewhere)
    run_storescu(running_bridge.port, [str(f) for f in study.files])
    running_bridge.wait_routed(1)
    assert running_bridge.zips(INBOX_AUTO) == []
    zip_path = _zip_of(running_bridge, INBOX_MANUAL, study.uid)
    assert _element_values(zip_path, "PatientSpeciesDescription") == {"Dog"}
    row = _row_for(running_bridge, zip_path)
    assert row.status == WARNING and "'CRID#' text outside the recipient-ID element" in row.detail and not row.crid


# -- item 8: the element is kept, and the files stay valid ------------------------------------
@pytest.mark.parametrize("keyword,group,element", [
    ("PatientID", "0010", "0020"),                # LO, Type 2 in every image IOD
    ("ReferringPhysicianName", "0008", "0090"),   # PN, Type 2
    ("PatientComments", "0010", "4000"),          # LT, Type 3
    ("PatientSpeciesDescription", "0010", "2201"),  # LO, Type 1C: may be absent, never empty
])
def test_an_element_holding_only_ids_is_kept_empty_and_validates(tmp_path, keyword, group, element):
    def put_ids(dataset: Dataset) -> None:
        setattr(dataset, keyword, f"CRID#{ID_A} CRID#{ID_B}")

    study = make_study(tmp_path / "send", count=1, customize=put_ids)
    bridge = _bridge_with_crid_tag(tmp_path, group, element)
    try:
        run_storescu(bridge.port, [str(f) for f in study.files])
        bridge.wait_routed(1)
        (zip_path,) = bridge.zips(INBOX_AUTO)
    finally:
        bridge.engine.stop(grace_seconds=5)
    assert zip_path.name.endswith(f"_CRID#{ID_A}CRID#{ID_B}.zip")
    assert_no_recipient_id_text(zip_path, ID_A, ID_B)
    with zipfile.ZipFile(zip_path) as archive:
        archive.extractall(tmp_path / "unzipped")
    (got,) = (tmp_path / "unzipped").rglob("*.dcm")
    received = dcmread(got)
    if keyword == "PatientSpeciesDescription":
        assert keyword not in received
    else:
        assert keyword in received and received[keyword].value in ("", None)
    sent_errors = dciodvfy_errors(str(study.files[0]))
    assert not (dciodvfy_errors(str(got)) - sent_errors)
    # The oracle can tell: deleting a Type 2 element, or emptying a Type 1C one, are errors.
    changed = dcmread(study.files[0])
    if keyword == "PatientSpeciesDescription":
        setattr(changed, keyword, "")
    else:
        delattr(changed, keyword)
    changed.save_as(tmp_path / "changed.dcm")
    if keyword != "PatientComments":
        assert dciodvfy_errors(str(tmp_path / "changed.dcm")) - sent_errors


# -- item 11: names that are visible, readable and honest -------------------------------------
NAME_CASES = [
    # patient name sent, as the ZIP name shows it, as the log book shows it (leading dots are harmless there)
    (".hidden^name", "hidden, name", ".hidden, name"),
    ("..^..", "", ".., .."),
    ("SMITH\\JONES", "SMITH, JONES", "SMITH, JONES"),
    ("EVIL\u202e^x\ty\u2066", "EVIL, x y", "EVIL, x y"),
    (f"Rex CRID#{ID_B}^Dog", "Rex, Dog", "Rex, Dog"),  # still in the file: manual, see below
]


def test_names_from_hostile_patient_names_are_visible_and_honest(running_bridge, tmp_path):
    studies = [make_study(tmp_path / str(number), count=1, patient_name=patient, crid_value=f"CRID#{ID_A}",
                          customize=lambda ds: setattr(ds, "SpecificCharacterSet", "ISO_IR 192"))
               for number, (patient, _, _) in enumerate(NAME_CASES)]
    run_storescu(running_bridge.port, [str(f) for study in studies for f in study.files])
    running_bridge.wait_routed(len(studies))

    for study, (patient, in_name, in_log_book) in zip(studies, NAME_CASES, strict=True):
        left_in_file = "CRID#" in patient  # only the configured element is rewritten
        inbox, suffix = (INBOX_MANUAL, "") if left_in_file else (INBOX_AUTO, f"_CRID#{ID_A}")
        zip_path = _zip_of(running_bridge, inbox, study.uid)
        assert zip_path.name == f"{in_name}_1929-05-05_M_2004-07-22_CT_{study.uid}{suffix}.zip", patient
        row = _row_for(running_bridge, zip_path)
        assert row.patient_name == in_log_book
        assert ("'CRID#' text outside the recipient-ID element" in row.detail) == left_in_file
    for inbox in (INBOX_AUTO, INBOX_MANUAL):
        folder = running_bridge.storage / inbox
        assert sorted(folder.glob("*.zip")) == sorted(folder.iterdir())  # nothing hidden from *.zip
        assert not [p for p in folder.iterdir() if p.name.startswith((".", " "))]


def _japanese_copy(folder: Path, patient_name: str) -> tuple[Path, str]:
    """pydicom's ISO 2022 IR 87 sample with a new study and the given name (written by pydicom)."""
    dataset = dcmread(get_charset_files("chrH31.dcm")[0])
    dataset.StudyInstanceUID, dataset.SOPInstanceUID = generate_uid(), generate_uid()
    dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    dataset.PatientName = patient_name
    dataset.PatientBirthDate, dataset.StudyDate = "19290505", "20040722"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "chrH31_copy.dcm"
    dataset.save_as(path, enforce_file_format=True)
    assert b"\x1b$B" in path.read_bytes()  # really encoded in JIS X 0208
    return path, dataset.StudyInstanceUID


def test_a_name_with_only_ideographic_and_phonetic_groups_shows_the_first(running_bridge, tmp_path):
    path, study_uid = _japanese_copy(tmp_path, "=山田^太郎=やまだ^たろう")
    run_storescu(running_bridge.port, [str(path)])
    running_bridge.wait_routed(1)
    zip_path = _zip_of(running_bridge, INBOX_MANUAL, study_uid)
    assert zip_path.name.startswith("山田, 太郎_1929-05-05_")
    assert _row_for(running_bridge, zip_path).patient_name == "山田, 太郎"


def _with_raw_study_uid(path: Path, raw_uid: bytes) -> None:
    """Put a Study Instance UID with a non-ASCII byte into the file (pydicom would refuse to write it)."""
    dataset = dcmread(path)
    old = str(dataset.StudyInstanceUID).encode()
    assert len(raw_uid) == len(old)
    data = path.read_bytes()
    assert data.count(old) == 1
    path.write_bytes(data.replace(old, raw_uid))


def test_a_uid_with_non_ascii_bytes_gives_a_hashed_name_field(running_bridge, tmp_path):
    study = make_study(tmp_path / "send", count=1, crid_value=f"CRID#{ID_A}", study_uid="1.2.826.0.1.3680043.99.1")
    _with_raw_study_uid(study.files[0], b"1.2.826.0.1.3680043.9\xe9.1")
    run_storescu(running_bridge.port, [str(study.files[0])])
    running_bridge.wait_routed(1)
    (zip_path,) = running_bridge.zips(INBOX_AUTO)
    expected_uid = safe_key("1.2.826.0.1.3680043.9\ufffd.1")
    assert zip_path.name == f"HOLTZMANN, Carsten_1929-05-05_M_2004-07-22_CT_{expected_uid}_CRID#{ID_A}.zip"
    assert "\ufffd" not in zip_path.name and expected_uid.startswith("x")
    assert_no_recipient_id_text(zip_path, ID_A)
