"""What the bridge needs to know about one received file, read from its header only."""

from __future__ import annotations

from dataclasses import dataclass, fields
from io import BytesIO
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.filereader import read_dataset
from pydicom.multival import MultiValue
from pydicom.uid import UID

from .crid import CridSplit, split_crids
from .dicom_patch import DEFLATED_TS, ElementSpan, find_element, make_span
from .header_scan import DatasetPeek, element_text, scan_header
from .study_record import StudyRecord


@dataclass(frozen=True)
class InstanceHeader:
    """What the zipper needs of every image: identity, modality, encoding, the CRID element."""

    path: Path
    sop_uid: str
    series_uid: str
    study_uid: str
    modality: str
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


SPECIFIC_CHARACTER_SET = 0x00080005
SOP_INSTANCE_UID = 0x00080018
STUDY_DATE = 0x00080020
MODALITY = 0x00080060
PATIENT_NAME = 0x00100010
STUDY_INSTANCE_UID = 0x0020000D
SERIES_INSTANCE_UID = 0x0020000E
PIXEL_DATA = 0x7FE00010


class MissingStudyUid(ValueError):
    """The file is readable DICOM but has no Study Instance UID: it belongs to no study."""


@dataclass(frozen=True)
class ReceivedIdentity:
    """The two UIDs the receiver files an image by: its study's spool folder, its name there."""

    study_uid: str
    sop_uid: str  # the dataset's SOP Instance UID (0008,0018); "" when the dataset has none


def read_identity(path: Path) -> ReceivedIdentity:
    """Study and SOP Instance UID of a received file, in one walk, reading no more than needed.

    Runs inside the C-STORE handler, where every millisecond delays the PACS's next image:
    the header walk finds the UIDs in microseconds; pydicom answers what the walk cannot.
    """
    scan = scan_header(path, {SOP_INSTANCE_UID, STUDY_INSTANCE_UID})
    if scan is not None:  # the walk is certain: an element it did not find is absent
        study_uid, sop_uid = scan.text(STUDY_INSTANCE_UID), scan.text(SOP_INSTANCE_UID)
    else:
        dataset = dcmread(path, stop_before_pixels=True, specific_tags=["StudyInstanceUID", "SOPInstanceUID"])
        study_uid, sop_uid = _text(dataset, "StudyInstanceUID"), _text(dataset, "SOPInstanceUID")
    if not study_uid:
        raise MissingStudyUid("the image has no Study Instance UID (0020,000D), or an empty one")
    return ReceivedIdentity(study_uid=study_uid, sop_uid=sop_uid)


def identity_from_values(values: dict[int, bytes]) -> ReceivedIdentity:
    """The identity ``read_identity`` would find, from raw top-level values read while the image
    streamed in (``bridge.fast_store.peek_identity``): an absent tag is an empty value."""
    study_uid = element_text(values.get(STUDY_INSTANCE_UID, b""))
    if not study_uid:
        raise MissingStudyUid("the image has no Study Instance UID (0020,000D), or an empty one")
    return ReceivedIdentity(study_uid=study_uid, sop_uid=element_text(values.get(SOP_INSTANCE_UID, b"")))


def read_study_uid(path: Path) -> str:
    """The Study Instance UID of a received file (see ``read_identity``)."""
    return read_identity(path).study_uid


def _text(dataset: Dataset, keyword: str) -> str:
    """A decoded value as DICOM writes it: several values joined with a backslash (not "['A', 'B']")."""
    value = dataset.get(keyword, "")
    if isinstance(value, MultiValue):
        return "\\".join("" if item is None else str(item).strip() for item in value)
    return "" if value is None else str(value).strip()


def _crid_of(raw_value: bytes | str | None) -> CridSplit:
    raw = raw_value or b""
    return split_crids(raw if isinstance(raw, bytes) else str(raw).encode("utf-8"))


def read_instance(path: Path, crid_tag: int | None) -> InstanceHeader:
    """Identity, modality and CRID element of one file, by the fast walk or else by pydicom."""
    wanted = {SOP_INSTANCE_UID, MODALITY, STUDY_INSTANCE_UID, SERIES_INSTANCE_UID}
    if crid_tag is not None and crid_tag < PIXEL_DATA:
        wanted.add(crid_tag)
    scan = scan_header(path, wanted) if crid_tag is None or crid_tag < PIXEL_DATA else None
    if scan is None or not scan.text(SOP_INSTANCE_UID):  # pydicom falls back to the file meta
        return _read_instance_with_pydicom(path, crid_tag)
    span = crid = None
    element = scan.elements.get(crid_tag) if crid_tag is not None else None
    if element is not None and element.length:  # an empty element has nothing to cut
        span = make_span(element.tag, element.vr, element.value_start, element.length, scan.implicit_vr,
                         scan.little_endian, scan.group_lengths.get(element.tag >> 16))
        crid = _crid_of(element.value)
    return InstanceHeader(
        path=path, sop_uid=scan.text(SOP_INSTANCE_UID), series_uid=scan.text(SERIES_INSTANCE_UID),
        study_uid=scan.text(STUDY_INSTANCE_UID), modality=scan.text(MODALITY),
        transfer_syntax=scan.transfer_syntax, crid_span=span, crid=crid,
    )


def _read_instance_with_pydicom(path: Path, crid_tag: int | None) -> InstanceHeader:
    dataset = dcmread(path, stop_before_pixels=crid_tag is None or crid_tag < PIXEL_DATA)
    span = crid = None
    if crid_tag is not None:
        span = find_element(dataset, crid_tag)  # before any access decodes the element
        if span is not None:
            crid = _crid_of(dataset.get_item(crid_tag).value)
    return InstanceHeader(
        path=path,
        sop_uid=_text(dataset, "SOPInstanceUID") or str(dataset.file_meta.get("MediaStorageSOPInstanceUID", "")),
        series_uid=_text(dataset, "SeriesInstanceUID"),
        study_uid=_text(dataset, "StudyInstanceUID"),
        modality=_text(dataset, "Modality"),
        transfer_syntax=str(dataset.file_meta.get("TransferSyntaxUID", "")),
        crid_span=span,
        crid=crid,
    )


def read_study_record(path: Path) -> StudyRecord:
    """The study's values from one file (its first image), decoded by pydicom in the file's charset.

    Every ``StudyRecord`` field that names a DICOM keyword is read; the per-image values
    (modalities, recipient IDs) are the caller's to add.
    """
    dataset = dcmread(path, stop_before_pixels=True)
    values: dict[str, Any] = {item.name: _text(dataset, item.metadata["keyword"])
                              for item in fields(StudyRecord) if "keyword" in item.metadata}
    return StudyRecord(**values)


@dataclass(frozen=True)
class ImageFacts:
    """What the Pending view shows of one image, so that it need not open the file (issue 12).

    ``modality`` and ``crid`` are ``read_instance``'s, the recipient-ID element being ``crid_tag``;
    ``patient_name`` and ``study_date`` are ``read_study_record``'s (DICOM forms), for a study's
    first image only: None when they were not asked for or could not be settled.
    """

    crid_tag: int | None
    modality: str
    crid: CridSplit | None
    patient_name: str | None = None
    study_date: str = ""


STUDY_FACT_TAGS = frozenset({SPECIFIC_CHARACTER_SET, STUDY_DATE, PATIENT_NAME})  # the charset decodes the name


def image_fact_tags(crid_tag: int | None) -> frozenset[int]:
    """The top-level tags ``facts_from_peek`` needs, to be walked while the image streams in."""
    crid = {crid_tag} if crid_tag is not None and crid_tag < PIXEL_DATA else set()
    return STUDY_FACT_TAGS | {MODALITY} | crid


def facts_from_peek(peek: DatasetPeek, crid_tag: int | None, with_study: bool) -> ImageFacts | None:
    """The image's facts from the dataset's first bytes (``header_scan.peek_dataset``), exactly as the
    file gives them; None when the walk did not settle them (the CRID element in a later fragment, a
    CRID tag after the pixel data, a deflated dataset): then the file is read (``read_image_facts``)."""
    if crid_tag is not None and crid_tag >= PIXEL_DATA:
        return None  # read_instance reads the whole file with pydicom for such a tag
    values = peek.values({MODALITY} if crid_tag is None else {MODALITY, crid_tag})
    if values is None:
        return None
    raw_crid = values.get(crid_tag) if crid_tag is not None else None
    crid = _crid_of(raw_crid) if raw_crid else None  # an empty element has no IDs (as read_instance)
    patient_name, study_date = None, ""
    if with_study and peek.settled(STUDY_FACT_TAGS):  # decoded by pydicom, in the image's character set
        dataset = read_dataset(BytesIO(peek.encoded(STUDY_FACT_TAGS)), peek.implicit_vr, peek.little_endian)
        patient_name, study_date = _text(dataset, "PatientName"), _text(dataset, "StudyDate")
    return ImageFacts(crid_tag, element_text(values.get(MODALITY, b"")), crid, patient_name, study_date)


def read_image_facts(path: Path, crid_tag: int | None, with_study: bool) -> ImageFacts:
    """The image's facts read from its file (when nothing was handed: pynetdicom's path, a restart)."""
    header = read_instance(path, crid_tag)
    patient_name, study_date = None, ""
    if with_study:
        record = read_study_record(path)
        patient_name, study_date = record.patient_name, record.study_date
    return ImageFacts(crid_tag, header.modality, header.crid, patient_name, study_date)
