"""ZIP names (README "ZIP names"): the README's example, and properties that must always hold."""

import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.aggregator import PendingStudy, safe_key
from bridge.crid import CridSplit
from bridge.instance import InstanceHeader, read_study_record
from bridge.layout import StorageLayout
from bridge.naming import display_date, display_patient_name, modality_field, zip_name
from bridge.study_record import StudyRecord, log_columns
from bridge.visible_text import is_visible
from bridge.zipper import Zipper, summarize

from .studies import CRID_TAG, make_study

UID = "1.3.46.670589.16.2.2.192.30.0.171.20040722.72143.104226"
BAD_UID = "1.2.\ufffd3"  # a UID with a non-ASCII byte, as the header walk decodes it


def test_the_readmes_example():
    parts = StudyRecord("HOLTZMANN^Carsten", "19290505", "M", "20040722", study_uid=UID, modalities=("CT",),
                        crids=("1234567890123456",))
    assert zip_name(parts) == f"HOLTZMANN, Carsten_1929-05-05_M_2004-07-22_CT_{UID}_CRID#1234567890123456.zip"


def test_missing_values_leave_fields_empty_and_clash_numbers_go_on_the_uid():
    parts = StudyRecord(study_uid="1.2.3")
    assert zip_name(parts) == "_____1.2.3.zip"
    assert zip_name(parts, 3) == "_____1.2.3-3.zip"


def test_patient_name_forms():
    assert display_patient_name("Family^Given^Middle") == "Family, Given Middle"
    assert display_patient_name("Yamada^Tarou=山田^太郎") == "Yamada, Tarou"
    assert display_patient_name("Family") == "Family"
    assert display_date("20040722") == "2004-07-22" and display_date("2004.07.22") == "2004-07-22"
    assert display_date("garbage") == ""


def test_modalities_most_frequent_first():
    assert modality_field(("SR", "CT", "CT", "SR", "CT")) == "CT-SR"
    assert modality_field(("MR", "CT")) == "CT-MR"


def test_illegal_characters_replaced():
    parts = StudyRecord('A/B:C*D?E"F<G>H|I\x01J', study_uid="1.2", modalities=("C:T",))
    name = zip_name(parts)
    assert name.startswith("A-B-C-D-E-F-G-H-I J_") and "_C-T_" in name


@pytest.mark.parametrize("patient,shown", [
    (".hidden^name", "hidden, name"), ("..^..", ""), (" ^x", "x"), ("-rf^x", "rf, x"),
    ("=山田^太郎=やまだ^たろう", "山田, 太郎"), ("==やまだ^たろう", "やまだ, たろう"),
    ("Yamada^Tarou=山田^太郎", "Yamada, Tarou"),
    ("SMITH\\JONES", "SMITH, JONES"), ("SMITH^John\\JONES^Mary", "SMITH, John; JONES, Mary"),
    ("A\tB\nC^D", "A B C, D"), ("\u202eevil\u2066x\u200b^y", "evilx, y"), ("CON.x^y", "CON-x, y"),
    ("nul .a^b", "nul-a, b"), (f"CRID#{'1' * 16}^Fido", "Fido"), ("CRI\u200bD#12345^Fido", "Fido"),
])
def test_patient_names_are_visible_readable_and_honest(patient, shown):
    assert zip_name(StudyRecord(patient, study_uid="1.2", modalities=("CT",))) == f"{shown}____CT_1.2.zip"


def test_other_fields_show_no_bad_input():
    parts = StudyRecord("A", "19290505\\19300101", "M\u202e\t", "2004\n0722", study_uid=BAD_UID,
                        modalities=("C\uFFFDT", "\x01"))
    name = zip_name(parts)
    assert name.startswith("A_1929-05-05_M__C-T_x") and "_C-T_" in name and "\ufffd" not in name
    assert name.endswith(f"_{safe_key(BAD_UID)}.zip") and safe_key(BAD_UID).startswith("x")


def test_log_book_columns_are_one_visible_line():
    columns = log_columns(StudyRecord(patient_name="=山田^太郎", birth_date="19290505",
                                      study_description="Knee\u202e\r\nleft\tside", modalities=("CT",)))
    assert columns["patient_name"] == "山田, 太郎" and columns["study_description"] == "Knee  left side"


_ILLEGAL = re.compile(r'[\\/:*?"<>|]')
_DEVICE = re.compile(r"(CON|PRN|AUX|NUL|COM[0-9¹²³]|LPT[0-9¹²³])\s*(\.|$)", re.IGNORECASE)
_any_text = (st.text(st.characters(codec="utf-8"), max_size=80) | st.text(max_size=400)
             | st.binary(max_size=80).map(lambda raw: raw.decode("ascii", "replace")))  # as the header walk decodes


def _assert_legal_everywhere(name: str) -> None:
    assert len(name.encode("utf-8")) <= 255 and name.endswith(".zip")
    assert not _ILLEGAL.search(name) and is_visible(name), name
    assert name[0] not in ". \t-" and not name[:-4].endswith((".", " ")), name
    assert not _DEVICE.match(name.split(".")[0]) and not _DEVICE.match(name), name
    assert name.count("CRID#") == len(re.findall(r"CRID#[0-9]{16}", name.rsplit("_", 1)[-1])), name


@given(patient=_any_text, birth=_any_text, sex=_any_text, date=_any_text,
       modalities=st.lists(_any_text, max_size=6), uid=_any_text | st.just(UID),
       ids=st.lists(st.text(alphabet="0123456789", min_size=16, max_size=16), max_size=5),
       clash=st.integers(min_value=1, max_value=10_000))
def test_any_field_text_gives_a_legal_visible_name(patient, birth, sex, date, modalities, uid, ids, clash):
    suffix = "".join(f"CRID#{i}" for i in ids)
    name = zip_name(StudyRecord(patient, birth, sex, date, study_uid=uid, modalities=tuple(modalities),
                                crids=tuple(ids)), clash)
    _assert_legal_everywhere(name)
    expected_uid = safe_key(uid) + (f"-{clash}" if clash > 1 else "")
    assert name.endswith(f"_{expected_uid}" + (f"_{suffix}" if suffix else "") + ".zip")


_image_ids = st.lists(st.text(alphabet="0123456789", min_size=16, max_size=16), max_size=5, unique=True)


@given(per_image=st.lists(_image_ids, min_size=1, max_size=6), patient=_any_text, uid=_any_text,
       clash=st.integers(min_value=1, max_value=10_000))
def test_any_number_of_ids_in_a_study_gives_a_name_that_fits(per_image, patient, uid, clash):
    headers = [InstanceHeader(Path(f"{n}.dcm"), f"1.{n}", "1.1", uid, "CT", "1.2.840.10008.1.2.1",
                              crid=CridSplit(kept=b"", ids=tuple(ids))) for n, ids in enumerate(per_image)]
    summary = summarize(headers, StudyRecord(patient, "19290505", "M", "20040722", ""))
    distinct = len({crid for ids in per_image for crid in ids})
    assert len(summary.crids) == (distinct if distinct <= 5 else 0)
    assert (f"{distinct} distinct recipient IDs" in " ".join(summary.warnings)) == (distinct > 5)
    name = zip_name(summary.record, clash)
    _assert_legal_everywhere(name)
    assert name.endswith("".join(f"CRID#{crid}" for crid in summary.crids) + ".zip")


def test_a_failed_study_folder_is_named_like_its_zip_and_fits_after_many_clashes(tmp_path):
    study = make_study(tmp_path / "spool" / "s", count=1, patient_name="LONG" * 80 + "^Name",
                       crid_value=f"CRID#{'1' * 16}")
    layout = StorageLayout(tmp_path / "store")
    layout.ensure()
    zipper = Zipper(layout, lambda: CRID_TAG)
    headers = zipper.read_headers(PendingStudy(key="k", folder=study.files[0].parent, last_arrival=0))
    parts = summarize(headers, read_study_record(study.files[0])).record
    for number in range(1, 1001):  # a thousand earlier failures of the same study
        (layout.inbox_failed / zip_name(parts, number)[: -len(".zip")]).mkdir()
    target = zipper.move_to_failed(PendingStudy(key="k", folder=study.files[0].parent, last_arrival=0), "why")
    assert target.name == zip_name(parts, 1001)[: -len(".zip")] and len(target.name.encode()) <= 255
    assert (target / "reason.txt").read_text() == "why\n"
