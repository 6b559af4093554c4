"""ZIP file names (manual §4): legal on Windows and Linux, at most 255 bytes, never ambiguous.

``PatientName_PatientBirthDate_PatientSex_StudyDate_Modality_StudyInstanceUID[_CRID#id…].zip``
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

MAX_NAME_BYTES = 255
_ILLEGAL = re.compile(r'[\\/:*?"<>|\x00-\x1f\x7f]')
_DATE = re.compile(r"\s*(\d{4})\.?(\d{2})\.?(\d{2})\s*")


@dataclass(frozen=True)
class ZipNameParts:
    """The study's values as read from its files (DICOM formats, not yet made file-safe)."""

    patient_name: str
    birth_date: str
    sex: str
    study_date: str
    modalities: tuple[str, ...]  # one entry per image
    study_uid: str
    crid_suffix: str = ""  # e.g. "CRID#1234567890123456CRID#…", empty for none


def display_patient_name(dicom_name: str) -> str:
    """``Family^Given^Middle^Prefix^Suffix`` → ``Family, Given Middle Prefix Suffix``.

    Only the first (alphabetic) component group is used when ideographic/phonetic ones follow.
    """
    alphabetic = dicom_name.split("=", 1)[0]
    family, *rest = [part.strip() for part in alphabetic.split("^")] or [""]
    given = " ".join(part for part in rest if part)
    if family and given:
        return f"{family}, {given}"
    return family or given


def display_date(dicom_date: str) -> str:
    """``YYYYMMDD`` (or the old ``YYYY.MM.DD``) → ``YYYY-MM-DD``; anything else → empty."""
    match = _DATE.fullmatch(dicom_date or "")
    return "-".join(match.groups()) if match else ""


def log_columns(patient_name: str, birth_date: str, study_date: str, study_description: str,
                modality: str) -> dict[str, Any]:
    """A study's log-book columns, formatted as the Log Book screen shows them."""
    return {"patient_name": display_patient_name(patient_name), "birth_date": display_date(birth_date),
            "study_date": display_date(study_date), "study_description": study_description, "modality": modality}


def modality_field(modalities: tuple[str, ...]) -> str:
    """The study's modalities, most frequent first (ties alphabetical), joined with '-'."""
    counts = Counter(m.strip() for m in modalities if m and m.strip())
    return "-".join(m for m, _ in sorted(counts.items(), key=lambda item: (-item[1], item[0])))


def file_safe(text: str) -> str:
    """Replace characters illegal in Windows/Linux file names (and control chars) with '-'."""
    return _ILLEGAL.sub("-", text)


def zip_name(parts: ZipNameParts, clash_number: int = 1) -> str:
    """The ZIP's file name; ``clash_number`` ≥ 2 appends ``-N`` to the Study Instance UID field.

    The patient name is shortened (on a character boundary) when the whole name would exceed
    255 bytes; the UID and IDs are never shortened.
    """
    uid = file_safe(parts.study_uid.strip())
    if clash_number > 1:
        uid = f"{uid}-{clash_number}"
    suffix = f"_{file_safe(parts.crid_suffix)}" if parts.crid_suffix else ""
    rest = "_" + "_".join([
        file_safe(display_date(parts.birth_date)),
        file_safe(parts.sex.strip()),
        file_safe(display_date(parts.study_date)),
        file_safe(modality_field(parts.modalities)),
        uid,
    ]) + suffix + ".zip"
    patient = file_safe(display_patient_name(parts.patient_name))
    budget = MAX_NAME_BYTES - len(rest.encode("utf-8"))
    while len(patient.encode("utf-8")) > max(budget, 0):
        patient = patient[:-1]
    name = patient + rest
    if len(name.encode("utf-8")) > MAX_NAME_BYTES:
        raise ValueError("Study Instance UID and recipient IDs alone exceed 255 bytes")
    return name
