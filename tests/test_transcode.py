"""Conversion of refused transfer syntaxes: values unchanged, lossy images stay marked lossy."""

from pathlib import Path

import numpy as np
import pydicom.data
import pytest
from pydicom import dcmread
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from bridge.transcode import LOSSY_METHOD, ConversionError, convert, fallback_syntaxes

TEST_FILES = Path(pydicom.data.__file__).parent / "test_files"  # listed locally: get_testdata_files may download

# One or more real files per transfer syntax (pydicom's own test data).
CASES = [
    "MR_small_implicit.dcm",  # implicit VR LE
    "CT_small.dcm",  # explicit VR LE
    "image_dfl.dcm",  # deflated
    "SC_rgb_jpeg_dcmtk.dcm",  # JPEG baseline (lossy, YBR)
    "SC_rgb_jpeg_gdcm.dcm",  # JPEG lossless SV1
    "MR_small_jpeg_ls_lossless.dcm",  # JPEG-LS lossless
    "JPEGLSNearLossless_16.dcm",  # JPEG-LS near-lossless
    "MR_small_jp2klossless.dcm",  # JPEG 2000 lossless
    "JPEG2000.dcm",  # JPEG 2000 (lossy)
    "MR_small_RLE.dcm",  # RLE
    "SC_rgb_rle_16bit_2frame.dcm",  # RLE, colour, two frames
]


@pytest.mark.parametrize("name", CASES)
def test_every_syntax_converts_to_uncompressed_with_the_same_pixels_and_uid(name, tmp_path):
    source = TEST_FILES / name
    original = dcmread(source)
    syntax = str(original.file_meta.TransferSyntaxUID)
    target = fallback_syntaxes(syntax)[0]
    converted_path = tmp_path / "converted.dcm"
    result = convert(source, target, converted_path)
    converted = dcmread(converted_path)
    assert converted.file_meta.TransferSyntaxUID == target
    assert converted.SOPInstanceUID == original.SOPInstanceUID
    assert converted.file_meta.MediaStorageSOPInstanceUID == original.file_meta.MediaStorageSOPInstanceUID
    assert np.array_equal(converted.pixel_array, original.pixel_array)
    assert "converted from" in result.note
    if syntax in LOSSY_METHOD:
        assert converted.LossyImageCompression == "01" and converted.LossyImageCompressionMethod
        assert "lossy" in result.note
    else:
        assert converted.get("LossyImageCompression", "00") in ("00", None)


def test_uncompressed_files_change_only_their_encoding(tmp_path):
    out = tmp_path / "implicit.dcm"
    convert(TEST_FILES / "CT_small.dcm", ImplicitVRLittleEndian, out)
    back = tmp_path / "explicit.dcm"
    convert(out, ExplicitVRLittleEndian, back)
    first, second = dcmread(TEST_FILES / "CT_small.dcm"), dcmread(back)
    assert [e.tag for e in first] == [e.tag for e in second]
    assert first.PixelData == second.PixelData and first.PatientName == second.PatientName


def test_nothing_is_ever_compressed_or_converted_from_an_unknown_syntax(tmp_path):
    assert set(fallback_syntaxes("1.2.840.10008.1.2.4.50")) == {ExplicitVRLittleEndian, ImplicitVRLittleEndian}
    assert fallback_syntaxes("1.2.3.4.5.6.7") == ()
    assert fallback_syntaxes(ExplicitVRBigEndian) == ()  # retired; pixel data would need swapping
    with pytest.raises(ConversionError, match="only to uncompressed"):
        convert(TEST_FILES / "CT_small.dcm", "1.2.840.10008.1.2.4.70", tmp_path / "x.dcm")


def test_damaged_pixel_data_is_a_conversion_error_naming_the_file(tmp_path):
    with pytest.raises(ConversionError, match="JPEG2000-embedded-sequence-delimiter.dcm"):
        convert(TEST_FILES / "JPEG2000-embedded-sequence-delimiter.dcm", ExplicitVRLittleEndian, tmp_path / "x.dcm")
