"""What the bridge needs to know about one received file, read from its header only."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import UID

from .crid import CridSplit, split_crids
from .dicom_patch import DEFLATED_TS, ElementSpan, find_element


@dataclass(frozen=True)
class InstanceHeader:
    """Study/patient fields of one instance plus where its CRID element sits, if any."""

    path: Path
    sop_uid: str
    series_uid: str
    study_uid: str
    patient_name: str
    birth_date: str
    sex: str
    study_date: str
    modality: str
    study_description: str
    transfer_syntax: str
    crid_span: ElementSpan | None = None
    crid: CridSplit | None = None

    @property
    def deflated(self) -> bool:
        return self.transfer_syntax == DEFLATED_TS

    @property
    def pixel_data_compressed(self) -> bool:
        """Encapsulated (JPEG, RLE, …) pixel data gains nothing from deflate; store it as is."""
        try:
            return UID(self.transfer_syntax).is_compressed
        except Exception:  # noqa: BLE001 - an unknown private syntax: just deflate it
            return False


def read_study_uid(path: Path) -> str:
    """The Study Instance UID of a received file, reading no more of it than needed."""
    dataset = dcmread(path, stop_before_pixels=True, specific_tags=["StudyInstanceUID"])
    uid = str(dataset.get("StudyInstanceUID", "") or "").strip()
    if not uid:
        raise ValueError("the image has no Study Instance UID (0020,000D)")
    return uid


def _text(dataset: Dataset, keyword: str) -> str:
    value = dataset.get(keyword, "")
    return "" if value is None else str(value).strip()


def read_instance(path: Path, crid_tag: int | None) -> InstanceHeader:
    """Parse the header (never the pixel data) and locate the CRID element's raw bytes."""
    dataset = dcmread(path, stop_before_pixels=True)
    span = crid = None
    if crid_tag is not None:
        span = find_element(dataset, crid_tag)  # before any access decodes the element
        if span is not None:
            raw = dataset.get_item(crid_tag).value or b""
            crid = split_crids(raw if isinstance(raw, bytes) else str(raw).encode("utf-8"))
    return InstanceHeader(
        path=path,
        sop_uid=_text(dataset, "SOPInstanceUID") or str(dataset.file_meta.get("MediaStorageSOPInstanceUID", "")),
        series_uid=_text(dataset, "SeriesInstanceUID"),
        study_uid=_text(dataset, "StudyInstanceUID"),
        patient_name=_text(dataset, "PatientName"),
        birth_date=_text(dataset, "PatientBirthDate"),
        sex=_text(dataset, "PatientSex"),
        study_date=_text(dataset, "StudyDate"),
        modality=_text(dataset, "Modality"),
        study_description=_text(dataset, "StudyDescription"),
        transfer_syntax=str(dataset.file_meta.get("TransferSyntaxUID", "")),
        crid_span=span,
        crid=crid,
    )
