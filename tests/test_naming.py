"""ZIP names (manual §4): the example from the manual, and properties that must always hold."""

import re

from hypothesis import given
from hypothesis import strategies as st

from bridge.naming import ZipNameParts, display_date, display_patient_name, modality_field, zip_name

UID = "1.3.46.670589.16.2.2.192.30.0.171.20040722.72143.104226"


def test_the_manuals_example():
    parts = ZipNameParts("HOLTZMANN^Carsten", "19290505", "M", "20040722", ("CT",), UID, "CRID#1234567890123456")
    assert zip_name(parts) == f"HOLTZMANN, Carsten_1929-05-05_M_2004-07-22_CT_{UID}_CRID#1234567890123456.zip"


def test_missing_values_leave_fields_empty_and_clash_numbers_go_on_the_uid():
    parts = ZipNameParts("", "", "", "", (), "1.2.3")
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
    parts = ZipNameParts('A/B\\C:D*E?F"G<H>I|J\x01', "", "", "", ("C:T",), "1.2")
    name = zip_name(parts)
    assert name.startswith("A-B-C-D-E-F-G-H-I-J-") and "_C-T_" in name


_ILLEGAL = re.compile(r'[\\/:*?"<>|\x00-\x1f\x7f]')


@given(patient=st.text(max_size=400), birth=st.text(max_size=12), sex=st.text(max_size=4),
       date=st.text(max_size=12), modalities=st.lists(st.text(max_size=4), max_size=5),
       ids=st.lists(st.text(alphabet="0123456789", min_size=16, max_size=16), max_size=5),
       clash=st.integers(min_value=1, max_value=9999))
def test_names_are_always_legal_and_fit(patient, birth, sex, date, modalities, ids, clash):
    suffix = "".join(f"CRID#{i}" for i in ids)
    name = zip_name(ZipNameParts(patient, birth, sex, date, tuple(modalities), UID, suffix), clash)
    assert len(name.encode("utf-8")) <= 255
    assert not _ILLEGAL.search(name)
    expected_tail = (f"{UID}-{clash}" if clash > 1 else UID) + (f"_{suffix}" if suffix else "") + ".zip"
    assert name.endswith("_" + expected_tail)  # UID and IDs are never shortened
