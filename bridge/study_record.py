"""One study record: a study's values as read from its files, and the forms the log book shows.

The record flows from the files (``instance.read_study_record``) into the ZIP name (``naming``),
the log book's row, the Log Book screen and the notification mails. A new study column (say
Accession Number) is added here only: a ``StudyRecord`` field naming the DICOM keyword it is
read from, a ``StudyColumns`` field for the log book's row, and a ``STUDY_COLUMNS`` entry with
its display form and label. The log book adds the column to an older database when it opens it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .crid import format_ids
from .naming import display_date, display_patient_name, display_text, modality_field


def _read_from(keyword: str) -> Any:
    """A record field read from the study's first file by this DICOM keyword."""
    return field(default="", metadata={"keyword": keyword})


@dataclass(frozen=True)
class StudyRecord:
    """A study's values as read (DICOM forms: not yet made visible, readable or file-safe)."""

    patient_name: str = _read_from("PatientName")
    birth_date: str = _read_from("PatientBirthDate")
    sex: str = _read_from("PatientSex")
    study_date: str = _read_from("StudyDate")
    study_description: str = _read_from("StudyDescription")
    study_uid: str = _read_from("StudyInstanceUID")
    modalities: tuple[str, ...] = ()  # one per image (of every image, not only the first)
    crids: tuple[str, ...] = ()  # the recipient IDs the study is routed with; none for Inbox_Manual

    @property
    def image_count(self) -> int:
        return len(self.modalities)

    @property
    def crid_text(self) -> str:
        """``CRID#…CRID#…`` as in the ZIP name and the log book, empty for none."""
        return format_ids(self.crids)


@dataclass(kw_only=True)
class StudyColumns:
    """A log-book row's study columns, in their display forms (empty for rows about no study)."""

    patient_name: str = ""
    birth_date: str = ""
    study_date: str = ""
    modality: str = ""
    image_count: int = 0
    study_description: str = ""
    crid: str = ""


@dataclass(frozen=True)
class StudyColumn:
    """How one study column is shown: its display form, its label and width, and whether mails name it."""

    name: str  # the StudyColumns field and the log book's column
    label: str
    width: int
    shown: Callable[[StudyRecord], str | int]
    phi: bool = False  # identifies the patient: left out of mails with notify.no_phi
    mailed: bool = True  # a line in notification mails (free text from the sender is not)


# In the order of the log book's table and of the Log Book screen's detail pane.
STUDY_COLUMNS = (
    StudyColumn("patient_name", "Patient", 24, lambda r: display_patient_name(r.patient_name), phi=True),
    StudyColumn("birth_date", "Birthday", 10, lambda r: display_date(r.birth_date), phi=True),
    StudyColumn("study_date", "Study Date", 10, lambda r: display_date(r.study_date)),
    StudyColumn("modality", "Mod.", 6, lambda r: modality_field(r.modalities)),
    StudyColumn("image_count", "#", 4, lambda r: r.image_count),
    StudyColumn("study_description", "Study Description", 24, lambda r: display_text(r.study_description),
                mailed=False),
    StudyColumn("crid", "CRID", 24, lambda r: r.crid_text, phi=True),
)


def log_columns(record: StudyRecord) -> dict[str, Any]:
    """The study's log-book columns (``StudyColumns`` fields), formatted as the Log Book screen shows them."""
    return {column.name: column.shown(record) for column in STUDY_COLUMNS}
