"""Make test studies from the real sample files that pydicom ships (nothing is downloaded)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

CT = "CT_small.dcm"              # Explicit VR little endian, 128×128 16-bit CT
MR = "MR_small.dcm"
RLE = "MR_small_RLE.dcm"
JPEG_BASELINE = "SC_rgb_jpeg_dcmtk.dcm"
JPEG2000 = "JPEG2000.dcm"
JPEG2000_LOSSLESS = "MR_small_jp2klossless.dcm"
JPEG_LS = "MR_small_jpeg_ls_lossless.dcm"
DEFLATED = "image_dfl.dcm"
SR = "test-SR.dcm"
IMPLICIT = "MR_small_implicit.dcm"
BIG_ENDIAN = "MR_small_bigendian.dcm"

CRID_TAG = 0x00102201  # Patient Species Description (LO)


def template(name: str) -> Dataset:
    path = get_testdata_file(name)
    assert path is not None, f"pydicom sample {name} missing"
    return dcmread(path)


@dataclass
class Study:
    uid: str
    files: list[Path]


def make_study(folder: Path, count: int = 3, sample: str = CT, crid_value: str | None = None,
               patient_name: str = "HOLTZMANN^Carsten", study_uid: str | None = None,
               modality: str | None = None, first_number: int = 1,
               customize: Callable[[Dataset], None] | None = None) -> Study:
    """``count`` instances of one study from a sample file, each with fresh series/SOP UIDs."""
    folder.mkdir(parents=True, exist_ok=True)
    study_uid = study_uid or generate_uid()
    series_uid = generate_uid()
    files = []
    for number in range(first_number, first_number + count):
        dataset = template(sample)
        dataset.StudyInstanceUID = study_uid
        dataset.SeriesInstanceUID = series_uid
        dataset.SOPInstanceUID = generate_uid()
        dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
        dataset.PatientName = patient_name
        dataset.PatientBirthDate = "19290505"
        dataset.PatientSex = "M"
        dataset.StudyDate = "20040722"
        dataset.InstanceNumber = number
        if modality:
            dataset.Modality = modality
        if crid_value is not None:
            dataset.PatientSpeciesDescription = crid_value
        if customize is not None:
            customize(dataset)
        path = folder / f"{sample.removesuffix('.dcm')}_{number:04d}_{dataset.SOPInstanceUID}.dcm"
        dataset.save_as(path, enforce_file_format=True)
        files.append(path)
    return Study(uid=study_uid, files=files)


def transfer_syntax(path: Path) -> str:
    return str(dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID)


PIXEL_DATA = 0x7FE00010
TRAILING_PADDING = 0xFFFCFFFC  # DCMTK's storescu drops Data Set Trailing Padding when it sends


def raw_elements(data: Dataset, leave_out: tuple[int, ...] = ()) -> dict[int, tuple[str | None, bytes]]:
    """Every top-level element as (VR, raw value bytes), without decoding values.

    ``leave_out`` names tags not compared; trailing padding is always left out (see above).
    """
    elements = {}
    for tag in list(data.keys()):
        if int(tag) in (*leave_out, TRAILING_PADDING):
            continue
        element = data[tag]
        if element.VR == "SQ":
            # senders may re-encode sequence lengths (undefined <-> defined): compare items
            value = repr([item.to_json_dict() for item in element.value]).encode()
        else:
            value = data.get_item(tag).value if hasattr(data.get_item(tag), "value_tell") else element.value
        # DCMTK corrects a sample's OW to OB on encapsulated pixel data: compare its bytes only
        vr = None if int(tag) == PIXEL_DATA else element.VR
        elements[int(tag)] = (vr, value if isinstance(value, bytes) else repr(value).encode())
    return elements


def make_large_study(folder: Path, count: int, crid_value: str | None = None, side: int = 512) -> Study:
    """``count`` CT images of side×side 16-bit noise (~0.5 MB each): zipping and sending take a while."""
    import random

    noise = random.Random(7)

    def large_noise(dataset: Dataset) -> None:
        dataset.Rows = dataset.Columns = side
        dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit, dataset.PixelRepresentation = 16, 16, 15, 0
        dataset.PixelData = noise.randbytes(side * side * 2)

    return make_study(folder, count=count, crid_value=crid_value, customize=large_noise)


def unreadable_dataset(path: Path):
    """A Part-10 file whose dataset is garbage after valid file meta (DCMTK refuses to send such)."""
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_file_meta_info

    meta = template(CT).file_meta
    meta.MediaStorageSOPInstanceUID = generate_uid()
    buffer = DicomBytesIO()
    write_file_meta_info(buffer, meta)
    path.write_bytes(b"\0" * 128 + b"DICM" + buffer.getvalue()
                     + b"\x08\x00\x05\x00CS\xff\xffgarbage that is no dataset")
    return path, meta


def send_raw(port: int, path: Path, meta) -> int:  # noqa: ANN001 - FileMetaDataset
    """Stream a file as it is with pynetdicom (the crafted one cannot go through DCMTK); its status."""
    from pynetdicom import AE

    ae = AE(ae_title="CRAFTER")
    ae.add_requested_context(meta.MediaStorageSOPClassUID, meta.TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", port, ae_title="CRYPE_DCM")
    assert assoc.is_established
    try:
        return int(assoc.send_c_store(path).Status)
    finally:
        assoc.release()
