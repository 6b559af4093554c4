"""Sending what the PACS accepts (issue 14): deflated files, conversion of refused syntaxes,
DICOMDIRs known by content and data sets without file meta, against Orthanc and DCMTK storescp."""

from __future__ import annotations

import io
import shutil
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pydicom.data
import pytest
from pydicom import dcmread
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid

from bridge.adhoc_send import send_path
from bridge.logbook import FAILED, SUCCESS, WARNING
from bridge.part10 import may_be_data_set, part10_copy
from bridge.settings import load_settings
from bridge.transcode import LOSSY_METHOD

from .conftest import write_config
from .pacs import Orthanc, StoreSCP
from .peers import PEER_ENV, dcmtk
from .test_send import sending_settings

TEST_FILES = Path(pydicom.data.__file__).parent / "test_files"  # listed locally: get_testdata_files may download

# pydicom's real files, one or more per transfer syntax the bridge can convert to uncompressed.
EVERY_SYNTAX = [
    "MR_small_implicit.dcm",  # implicit VR LE
    "CT_small.dcm",  # explicit VR LE
    "image_dfl.dcm",  # deflated explicit VR LE
    "SC_rgb_jpeg_dcmtk.dcm",  # JPEG baseline (lossy)
    "SC_rgb_jpeg_gdcm.dcm",  # JPEG lossless SV1
    "MR_small_jpeg_ls_lossless.dcm",  # JPEG-LS lossless
    "JPEGLSNearLossless_16.dcm",  # JPEG-LS near-lossless (lossy)
    "MR_small_jp2klossless.dcm",  # JPEG 2000 lossless
    "JPEG2000.dcm",  # JPEG 2000 (lossy)
    "MR_small_RLE.dcm",  # RLE lossless
]


def with_own_uid(name: str, folder: Path) -> Path:
    """A copy with a SOP Instance UID of its own (several of pydicom's files share one); pixels untouched.

    Files without study/series UIDs get some: Orthanc answers 0xA700 for an image it cannot index.
    """
    dataset = dcmread(TEST_FILES / name)
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID"):
        if keyword not in dataset:
            setattr(dataset, keyword, generate_uid())
    dataset.SOPInstanceUID = dataset.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / name
    dataset.save_as(target)
    assert str(dcmread(target).file_meta.TransferSyntaxUID) == str(dataset.file_meta.TransferSyntaxUID)
    return target


def zip_bytes(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def dcmconv_deflated(source: Path, target: Path) -> Path:
    subprocess.run([dcmtk("dcmconv"), "+td", str(source), str(target)], check=True, env=PEER_ENV, timeout=60)
    assert dcmread(target).file_meta.TransferSyntaxUID == DeflatedExplicitVRLittleEndian
    return target


def without_meta(dataset) -> dict:  # noqa: ANN001 - a pydicom Dataset
    """The data set's values; DCMTK drops a trailing padding element (FFFC,FFFC) when it stores."""
    return {element.tag: element.value for element in dataset if element.tag != 0xFFFCFFFC}


@pytest.mark.parametrize("peer_kind", ["storescp", "orthanc"])
def test_deflated_files_reach_storescp_and_orthanc_and_inflate_to_the_same_data_set(
        bridge_settings, make_bridge, tmp_path, peer_kind):
    (tmp_path / "in").mkdir()
    files = [TEST_FILES / "image_dfl.dcm",  # its raw deflate stream is odd-length: the case that broke
             dcmconv_deflated(TEST_FILES / "CT_small.dcm", tmp_path / "in" / "ct_deflated.dcm")]
    assert (TEST_FILES / "image_dfl.dcm").stat().st_size % 2
    peer = StoreSCP(tmp_path / "scp") if peer_kind == "storescp" else Orthanc(tmp_path / "orthanc")
    try:
        bridge = make_bridge(sending_settings(bridge_settings, peer.port, peer.aet))
        bridge.drop(zip_bytes({f"series/{p.name}": p.read_bytes() for p in files}))
        (done,) = bridge.wait_done()
        row = bridge.engine.logbook.newest()[0]
        assert done.status == SUCCESS, row.detail
        if isinstance(peer, StoreSCP):
            stored = [dcmread(p) for p in peer.folder.iterdir()]
        else:
            stored = [dcmread(io.BytesIO(peer.file(i))) for i in peer.sop_uids().values()]
        by_uid = {str(d.SOPInstanceUID): d for d in stored}
        for path in files:
            sent = dcmread(path)
            got = by_uid[str(sent.SOPInstanceUID)]
            assert got.file_meta.TransferSyntaxUID == DeflatedExplicitVRLittleEndian
            assert without_meta(got) == without_meta(sent)
    finally:
        peer.stop()


def test_orthanc_taking_only_uncompressed_gets_every_syntax_converted(bridge_settings, make_bridge, tmp_path):
    files = [with_own_uid(name, tmp_path / "in") for name in EVERY_SYNTAX]
    orthanc = Orthanc(tmp_path / "orthanc", AcceptedTransferSyntaxes=[ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    try:
        bridge = make_bridge(sending_settings(bridge_settings, orthanc.port, orthanc.aet,
                                              send_parallel_associations=2))
        bridge.drop(zip_bytes({f"cd/{p.name}": p.read_bytes() for p in files}))
        (done,) = bridge.wait_done()
        row = bridge.engine.logbook.newest()[0]
        assert done.status == SUCCESS, row.detail
        stored = orthanc.sop_uids()
        for path in files:
            sent = dcmread(path)
            got = dcmread(io.BytesIO(orthanc.file(stored[str(sent.SOPInstanceUID)])))
            assert got.file_meta.TransferSyntaxUID in (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
            assert np.array_equal(got.pixel_array, sent.pixel_array), path.name
            if str(sent.file_meta.TransferSyntaxUID) in LOSSY_METHOD:
                assert got.LossyImageCompression == "01", path.name
        assert ("1 converted from JPEG 2000 Image Compression (Lossless Only) to Explicit VR Little Endian (the PACS "
                "does not accept JPEG 2000 Image Compression (Lossless Only) for MR Image Storage)") in row.detail
        assert row.detail.count(" converted from ") == len(files) - 2  # all but the two uncompressed ones
        assert "converted from Implicit VR Little Endian" not in row.detail  # accepted as it is
    finally:
        orthanc.stop()


def test_a_pacs_taking_only_jpeg2000_refuses_an_uncompressed_file_with_a_reason(bridge_settings, make_bridge,
                                                                              tmp_path):
    orthanc = Orthanc(tmp_path / "orthanc", AcceptedTransferSyntaxes=["1.2.840.10008.1.2.4.90"])
    try:
        bridge = make_bridge(sending_settings(bridge_settings, orthanc.port, orthanc.aet))
        bridge.drop(zip_bytes({"ct.dcm": (TEST_FILES / "CT_small.dcm").read_bytes()}))
        (done,) = bridge.wait_done()
        row = bridge.engine.logbook.newest()[0]
        assert done.status == FAILED
        assert "CT Image Storage" in row.detail and "Explicit VR Little Endian" in row.detail, row.detail
        assert "Implicit VR Little Endian" in row.detail and "aborted" not in row.detail
        assert orthanc.sop_uids() == {}  # nothing compressed behind the admin's back
    finally:
        orthanc.stop()


def test_storescp_with_restricted_syntaxes_gets_jpeg_lossless_decompressed(bridge_settings, make_bridge, tmp_path):
    source = with_own_uid("SC_rgb_jpeg_gdcm.dcm", tmp_path / "in")
    scp = StoreSCP(tmp_path / "scp", extra_args=("+xe",))  # explicit VR little endian only
    try:
        bridge = make_bridge(sending_settings(bridge_settings, scp.port, scp.aet))
        bridge.drop(zip_bytes({"sc.dcm": source.read_bytes()}))
        (done,) = bridge.wait_done()
        row = bridge.engine.logbook.newest()[0]
        assert done.status == SUCCESS, row.detail
        (stored,) = [dcmread(p) for p in scp.folder.iterdir()]
        assert stored.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        assert np.array_equal(stored.pixel_array, dcmread(source).pixel_array)
        assert "1 converted from JPEG Lossless" in row.detail
    finally:
        scp.stop()


def test_cd_copy_zip_skips_dicomdirs_by_content_and_sends_files_without_meta(bridge_settings, make_bridge,
                                                                          tmp_path):
    dicomdir = (TEST_FILES / "dicomdirtests" / "DICOMDIR").read_bytes()
    no_meta = TEST_FILES / "ExplVR_LitEndNoMeta.dcm"
    scp = StoreSCP(tmp_path / "scp")
    try:
        bridge = make_bridge(sending_settings(bridge_settings, scp.port, scp.aet))
        bridge.drop(zip_bytes({"DICOMDIR;1": dicomdir, "extra/dicomdir.dcm": dicomdir,
                               "DICOM/IM000001;1": (TEST_FILES / "CT_small.dcm").read_bytes(),
                               "DICOM/IM000002;1": no_meta.read_bytes(), "README.TXT;1": b"Burned by CD writer"}))
        (done,) = bridge.wait_done()
        row = bridge.engine.logbook.newest()[0]
        assert done.status == WARNING, row.detail  # skipped entries are worth a look
        received = {str(dcmread(p).SOPInstanceUID) for p in scp.folder.iterdir()}
        assert received == {str(dcmread(TEST_FILES / "CT_small.dcm").SOPInstanceUID),
                            str(dcmread(no_meta, force=True).SOPInstanceUID)}
        assert "2 images stored" in row.detail
        assert "DICOMDIR;1: DICOMDIR" in row.detail and "extra/dicomdir.dcm: DICOMDIR" in row.detail
        assert "README.TXT;1: not a DICOM file" in row.detail
        assert "without file meta" in row.detail and "DICOM/IM000002;1" in row.detail
    finally:
        scp.stop()


def test_send_command_converts_and_skips_dicomdir_in_a_folder(tmp_path):
    folder = tmp_path / "cd"
    with_own_uid("MR_small_jp2klossless.dcm", folder / "DICOM")
    shutil.copy(TEST_FILES / "dicomdirtests" / "DICOMDIR", folder / "dicomdir.dcm")
    shutil.copy(TEST_FILES / "ExplVR_BigEndNoMeta.dcm", folder / "DICOM" / "IM000002")
    (folder / "README").write_text("a CD")
    orthanc = Orthanc(tmp_path / "orthanc", AcceptedTransferSyntaxes=[ExplicitVRLittleEndian, ImplicitVRLittleEndian,
                                                                      "1.2.840.10008.1.2.2"])
    try:
        config = write_config(tmp_path / "c.toml", general__storage_folder=str(tmp_path / "store"),
                              send__host="127.0.0.1", send__port=orthanc.port, send__ae_title_receiver=orthanc.aet)
        report, skipped, total = send_path(folder, load_settings(config), lambda done, total: None)
        assert total == 2 and not report.failed, report.failed
        assert sorted(s.split(": ", 1)[1] for s in skipped) == ["DICOMDIR (an index, not an image)",
                                                                 "not a DICOM file"]
        assert len(report.converted) == 1
        expected = {str(dcmread(p).SOPInstanceUID) for p in (folder / "DICOM").glob("*.dcm")}
        expected.add(str(dcmread(TEST_FILES / "ExplVR_BigEndNoMeta.dcm", force=True).SOPInstanceUID))
        assert set(orthanc.sop_uids()) == expected
    finally:
        orthanc.stop()


@pytest.mark.parametrize(("name", "syntax"), [("ExplVR_LitEndNoMeta.dcm", ExplicitVRLittleEndian),
                                              ("ExplVR_BigEndNoMeta.dcm", "1.2.840.10008.1.2.2")])
def test_a_data_set_without_file_meta_gets_a_part10_copy_with_the_same_values(tmp_path, name, syntax):
    source = TEST_FILES / name
    assert may_be_data_set(source.read_bytes()[:16])
    found = part10_copy(source, tmp_path / "copy.dcm")
    original = dcmread(source, force=True)
    assert found == (str(original.SOPClassUID), str(original.SOPInstanceUID), syntax)
    copy = dcmread(tmp_path / "copy.dcm")  # without force: a proper Part-10 file now
    assert copy.file_meta.TransferSyntaxUID == syntax and without_meta(copy) == without_meta(original)


def test_files_that_are_not_sendable_data_sets_get_no_copy(tmp_path):
    pdf = tmp_path / "report.pdf"
    pdf.write_bytes(b"%PDF-1.4\n" + bytes(range(256)) * 40)
    assert not may_be_data_set(pdf.read_bytes())
    assert part10_copy(pdf, tmp_path / "a.dcm") is None
    assert part10_copy(TEST_FILES / "no_meta.dcm", tmp_path / "b.dcm") is None  # no SOP class/instance: no C-STORE
    assert not (tmp_path / "a.dcm").exists() and not (tmp_path / "b.dcm").exists()
