"""ZIP file names (README "ZIP names"): legal on Windows and Linux, at most 255 bytes, visible, never ambiguous.

``PatientName_PatientBirthDate_PatientSex_StudyDate_Modality_StudyInstanceUID[_CRID#id…].zip``

Every field comes from the sender, so every field is made safe (README "ZIP names"): no
control or format characters, no characters Windows forbids, no recipient-ID text outside the
last field, no leading dot or space, no Windows device name; the UID is used only when it is a
well-formed UID (else a hash of it); each field has a byte budget so the name always fits.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import TYPE_CHECKING

from .aggregator import safe_key
from .crid import without_crid_text
from .visible_text import visible

if TYPE_CHECKING:  # the record imports the display forms from here
    from .study_record import StudyRecord

MAX_NAME_BYTES = 255
# Field budgets (bytes) for values that are short in real DICOM but unbounded from a hostile
# sender. With five IDs, a 64-character UID and clash number 10000 the patient name keeps ≥ 11.
MAX_SEX_BYTES = 8
MAX_MODALITY_BYTES = 32
_ILLEGAL = re.compile(r'[\\/:*?"<>|]')  # Windows; control characters are handled by visible()
_DATE = re.compile(r"\s*(\d{4})\.?(\d{2})\.?(\d{2})\s*")
_LEADING_HIDDEN = re.compile(r"^[\s.,;-]+")  # a leading dot hides the file, a space or dash confuses tools
# Windows device names are reserved even with an extension ("CON.x_…zip" opens the console).
_DEVICE_NAME = re.compile(r"(CON|PRN|AUX|NUL|COM[0-9¹²³]|LPT[0-9¹²³]|CONIN\$|CONOUT\$) *\.", re.IGNORECASE)
_NOT_CODE = re.compile(r"[^A-Za-z0-9 _-]")  # Code String (CS): sex and modality


def _one_person(dicom_name: str) -> str:
    """One PN value: the first non-empty component group, ``Family, Given Middle Prefix Suffix``."""
    groups = dicom_name.split("=")  # alphabetic, ideographic, phonetic
    group = next((g for g in groups if g.replace("^", "").strip()), "")
    family, *rest = [part.strip() for part in group.split("^")]
    given = " ".join(part for part in rest if part)
    if family and given:
        return f"{family}, {given}"
    return family or given


def display_patient_name(dicom_name: str) -> str:
    """``Family^Given^Middle^Prefix^Suffix`` → ``Family, Given Middle Prefix Suffix``, made visible.

    The alphabetic group is used, or the first non-empty one when it is empty (a Japanese
    name may have only ideographic and phonetic groups). Several values (``SMITH\\JONES``)
    are joined with ``, `` — or ``; `` when a value itself has a comma (``SMITH, John; JONES, Mary``).
    """
    values = without_crid_text(visible(dicom_name)).split("\\")
    people = [person for person in (_one_person(value) for value in values) if person]
    separator = "; " if any(", " in person for person in people) else ", "
    return separator.join(people)


def display_date(dicom_date: str) -> str:
    """``YYYYMMDD`` (or the old ``YYYY.MM.DD``) → ``YYYY-MM-DD``; anything else → empty.

    Of several values, the first is shown.
    """
    match = _DATE.fullmatch((dicom_date or "").split("\\")[0])
    return "-".join(match.groups()) if match else ""


def display_text(text: str) -> str:
    """A free-text value (study description) as the log book shows it: one visible line."""
    return without_crid_text(visible(text)).strip()


def code_string(text: str) -> str:
    """A Code String value (sex, modality) with anything a code cannot hold shown as '-'."""
    return _NOT_CODE.sub("-", visible(text, "-")).strip(" -")


def modality_field(modalities: tuple[str, ...]) -> str:
    """The study's modalities, most frequent first (ties alphabetical), joined with '-'."""
    counts = Counter(code_string(m) for m in modalities if m and m.strip())
    counts.pop("", None)
    return "-".join(m for m, _ in sorted(counts.items(), key=lambda item: (-item[1], item[0])))


def file_safe(text: str) -> str:
    """Replace characters illegal in Windows/Linux file names and control characters with '-'."""
    return _ILLEGAL.sub("-", visible(text, "-"))


def _fit(text: str, budget: int) -> str:
    """``text`` cut on a character boundary to at most ``budget`` UTF-8 bytes."""
    encoded = text.encode("utf-8")
    if len(encoded) <= budget:
        return text
    return encoded[: max(budget, 0)].decode("utf-8", "ignore")


def uid_field(study_uid: str) -> str:
    """The UID as it appears in a name: itself when well formed, else a hash (never U+FFFD or '/')."""
    return safe_key(study_uid)


def zip_name(record: StudyRecord, clash_number: int = 1) -> str:
    """The ZIP's file name; ``clash_number`` ≥ 2 appends ``-N`` to the Study Instance UID field.

    The patient name is shortened (on a character boundary) when the whole name would exceed
    255 bytes; the UID and IDs are never shortened (a UID that is no well-formed UID, which
    could be any length, is replaced by a fixed-length hash first).
    """
    uid = uid_field(record.study_uid)
    if clash_number > 1:
        uid = f"{uid}-{clash_number}"
    suffix = f"_{file_safe(record.crid_text)}" if record.crids else ""
    rest = "_" + "_".join([
        display_date(record.birth_date),
        _fit(file_safe(code_string(record.sex)), MAX_SEX_BYTES),
        display_date(record.study_date),
        _fit(file_safe(modality_field(record.modalities)), MAX_MODALITY_BYTES),
        uid,
    ]) + suffix + ".zip"
    patient = _LEADING_HIDDEN.sub("", file_safe(display_patient_name(record.patient_name)))
    patient = _fit(patient, MAX_NAME_BYTES - len(rest.encode("utf-8")))
    name = patient + rest
    device = _DEVICE_NAME.match(name)
    if device:
        name = f"{device.group(1)}-{name[device.end():]}"
    if len(name.encode("utf-8")) > MAX_NAME_BYTES:
        raise ValueError("Study Instance UID and recipient IDs alone exceed 255 bytes")
    return name
