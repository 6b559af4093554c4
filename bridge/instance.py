"""What the bridge needs to know about one received file, read from its header only."""

from __future__ import annotations

import struct
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
    """The Study Instance UID of a received file, reading no more of it than needed.

    Runs inside the C-STORE handler, where every millisecond delays the PACS's next image:
    a plain scan of the first elements finds the UID in microseconds; anything unusual
    (deflate, undefined lengths before group 0020, a large header) goes to pydicom.
    """
    uid = scan_study_uid(path)
    if uid:
        return uid
    dataset = dcmread(path, stop_before_pixels=True, specific_tags=["StudyInstanceUID"])
    uid = str(dataset.get("StudyInstanceUID", "") or "").strip()
    if not uid:
        raise ValueError("the image has no Study Instance UID (0020,000D)")
    return uid


_STUDY_UID_TAG = 0x0020000D
_SCAN_BYTES = 64 * 1024
_LONG_HEADER_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
_IMPLICIT_LE = "1.2.840.10008.1.2"
_EXPLICIT_BE = "1.2.840.10008.1.2.2"


def _element_at(head: bytes, pos: int, order: str, implicit: bool) -> tuple[int, int, int] | None:
    """(tag, value start, value length) of the element at ``pos``, or None past the buffer."""
    if pos + 8 > len(head):
        return None
    group, element = struct.unpack_from(order + "HH", head, pos)
    if implicit:
        (length,) = struct.unpack_from(order + "L", head, pos + 4)
        return (group << 16) | element, pos + 8, length
    if head[pos + 4 : pos + 6] in _LONG_HEADER_VRS:
        if pos + 12 > len(head):
            return None
        (length,) = struct.unpack_from(order + "L", head, pos + 8)
        return (group << 16) | element, pos + 12, length
    (length,) = struct.unpack_from(order + "H", head, pos + 6)
    return (group << 16) | element, pos + 8, length


def scan_study_uid(path: Path) -> str | None:
    """The Study Instance UID by walking element headers; None when the fast path cannot tell."""
    with open(path, "rb") as handle:
        head = handle.read(_SCAN_BYTES)
    if head[128:132] != b"DICM":
        return None
    pos, syntax = 132, ""
    while (found := _element_at(head, pos, "<", implicit=False)) is not None:
        tag, start, length = found
        if tag >> 16 != 0x0002:
            break
        if tag == 0x00020010:
            syntax = head[start : start + length].rstrip(b"\x00 ").decode("ascii", "replace")
        pos = start + length
    if syntax == DEFLATED_TS or not syntax:
        return None
    implicit = syntax == _IMPLICIT_LE
    order = ">" if syntax == _EXPLICIT_BE else "<"
    while (found := _element_at(head, pos, order, implicit)) is not None:
        tag, start, length = found
        if tag == _STUDY_UID_TAG:
            if start + length > len(head):
                return None
            return head[start : start + length].rstrip(b"\x00 ").decode("ascii", "replace").strip() or None
        if tag > _STUDY_UID_TAG or length == 0xFFFFFFFF:
            return None
        pos = start + length
    return None


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
