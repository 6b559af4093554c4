"""Files on a CD or in a ZIP that are DICOM but not in the Part-10 form the sender streams.

A DICOMDIR is known by its Media Storage SOP Class (Media Storage Directory Storage), whatever
its name (``DICOMDIR;1``, ``dicomdir.dcm``): it is an index, not an image, so it is skipped.
A data set without file meta (old CD writers, some archives) is still an image the PACS should
get: it is read with pydicom (``force=True``, which detects implicit/explicit VR and byte
order), and written again as a Part-10 file with file meta built from the data set itself, so
that the sender can stream it like any other. Anything else (a PDF, a README) is not DICOM.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import FileMetaDataset
from pydicom.uid import UID, ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"
NO_META_MAX_BYTES = 2 * 1024**3  # pydicom reads such a data set whole; larger files are not tried


def may_be_data_set(head: bytes) -> bool:
    """A data set without file meta starts with a group 0008 element (little or big endian).

    Checked before pydicom reads a whole file with ``force=True``: a large PDF or video in a
    ZIP is then not parsed at all.
    """
    return head[:2] in (b"\x08\x00", b"\x00\x08")


def is_dicomdir(sop_class: str) -> bool:
    return sop_class == MEDIA_STORAGE_DIRECTORY


def part10_copy(source: Path, destination: Path) -> tuple[str, str, str] | None:
    """Write ``source`` (a data set without file meta) as a Part-10 file; (SOP class, instance, syntax) or None."""
    try:
        with warnings.catch_warnings():  # "Expected implicit VR, but found explicit VR": that is the point
            warnings.simplefilter("ignore")
            dataset = dcmread(source, force=True)
        sop_class, sop_instance = str(dataset.SOPClassUID), str(dataset.SOPInstanceUID)
    except Exception:  # noqa: BLE001 - not DICOM at all: pydicom fails in many ways
        return None
    if not (UID(sop_class).is_valid and UID(sop_instance).is_valid):
        return None
    implicit, little = dataset.original_encoding
    if implicit is None or little is None:
        return None
    syntax = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian if little else ExplicitVRBigEndian
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = UID(sop_instance)
    meta.TransferSyntaxUID = syntax
    dataset.file_meta = meta
    try:
        dataset.save_as(destination, implicit_vr=implicit, little_endian=little, enforce_file_format=True)
    except Exception:  # noqa: BLE001 - values pydicom cannot write back: treat as not sendable DICOM
        destination.unlink(missing_ok=True)
        return None
    return sop_class, sop_instance, str(syntax)
