"""Convert a file the PACS will not take in its own transfer syntax into one it will.

The bridge sends files as they are. Only when the PACS refuses a file's transfer syntax does
the sender propose the fallbacks named here and, if one is accepted, convert a copy:

- between the uncompressed syntaxes (implicit ↔ explicit VR little endian, deflated → little
  endian): the same values re-encoded, nothing lost. Big endian (retired) is not converted:
  its pixel data would need byte-swapping that pydicom leaves to the caller;
- compressed → explicit (or implicit) VR little endian, decoded by pydicom's pixel-data
  plugins (GDCM covers JPEG baseline/extended/lossless, JPEG-LS, JPEG 2000, RLE). Lossless
  stays bit-exact. A lossy image stays marked as lossy: Lossy Image Compression (0028,2110)
  "01", with its ratio and method (the method filled in from the old syntax if absent), so
  nobody downstream takes it for an original.

Never the other way: the bridge does not compress, so it never makes a lossy image out of a
lossless one and never re-encodes lossy data as if it were lossless. The SOP Instance UID is
kept (the pixel values the file holds do not change), so the PACS files it under the same
instance as it would the original.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydicom import dcmread
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

UNCOMPRESSED = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)

# Syntaxes whose decoding changes nothing (PS3.5 Annex A: lossless processes).
LOSSLESS_COMPRESSED = frozenset({
    "1.2.840.10008.1.2.4.57",  # JPEG Lossless, Non-Hierarchical (Process 14)
    "1.2.840.10008.1.2.4.70",  # JPEG Lossless, first-order prediction (Process 14 SV1)
    "1.2.840.10008.1.2.4.80",  # JPEG-LS Lossless
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 (Lossless Only)
    "1.2.840.10008.1.2.4.201",  # HTJ2K (Lossless Only)
    "1.2.840.10008.1.2.4.202",  # HTJ2K with RPCL Options (Lossless Only)
    "1.2.840.10008.1.2.5",  # RLE Lossless
})

# The Lossy Image Compression Method (0028,2114) defined term for each lossy syntax.
LOSSY_METHOD = {
    "1.2.840.10008.1.2.4.50": "ISO_10918_1",  # JPEG Baseline
    "1.2.840.10008.1.2.4.51": "ISO_10918_1",  # JPEG Extended
    "1.2.840.10008.1.2.4.81": "ISO_14495_1",  # JPEG-LS near-lossless
    "1.2.840.10008.1.2.4.91": "ISO_15444_1",  # JPEG 2000
    "1.2.840.10008.1.2.4.203": "ISO_15444_15",  # HTJ2K
}


class ConversionError(Exception):
    """The file cannot be converted (no decoder, damaged pixel data); the message says why."""


@dataclass(frozen=True)
class Conversion:
    """A converted copy and a line for the log book saying what was done."""

    path: Path
    note: str


def fallback_syntaxes(transfer_syntax: str) -> tuple[str, ...]:
    """Syntaxes a file in ``transfer_syntax`` can be converted to without losing anything, best first."""
    if transfer_syntax == ExplicitVRLittleEndian:
        return (ImplicitVRLittleEndian,)
    if transfer_syntax == ImplicitVRLittleEndian:
        return (ExplicitVRLittleEndian,)
    if transfer_syntax == ExplicitVRBigEndian:
        return ()
    if transfer_syntax == DeflatedExplicitVRLittleEndian or _is_compressed(transfer_syntax):
        return UNCOMPRESSED
    return ()  # an unknown (private) syntax: we cannot read it, so we do not pretend to


def _is_compressed(transfer_syntax: str) -> bool:
    return transfer_syntax in LOSSLESS_COMPRESSED or transfer_syntax in LOSSY_METHOD or (
        UID(transfer_syntax).is_transfer_syntax and UID(transfer_syntax).is_compressed)


def _syntax_name(transfer_syntax: str) -> str:
    name = UID(transfer_syntax).name
    return name if name != transfer_syntax else f"transfer syntax {transfer_syntax}"


def convert(source: Path, target_syntax: str, destination: Path) -> Conversion:
    """Write ``source`` re-encoded in ``target_syntax`` (one of its fallbacks) to ``destination``."""
    if target_syntax not in UNCOMPRESSED:
        raise ConversionError(f"the bridge converts only to uncompressed syntaxes, not {_syntax_name(target_syntax)}")
    try:
        dataset = dcmread(source)
    except Exception as err:  # noqa: BLE001 - pydicom raises many kinds for a damaged file
        raise ConversionError(f"cannot read {source.name}: {err}") from None
    original = str(dataset.file_meta.get("TransferSyntaxUID", ""))
    if target_syntax not in fallback_syntaxes(original):
        raise ConversionError(f"cannot convert {_syntax_name(original)} to {_syntax_name(target_syntax)}")
    note = f"converted from {_syntax_name(original)} to {_syntax_name(target_syntax)}"
    if _is_compressed(original):
        try:
            dataset.decompress(generate_instance_uid=False)
        except Exception as err:  # noqa: BLE001 - missing plugin, damaged fragments, ...
            raise ConversionError(f"cannot decompress {source.name} ({_syntax_name(original)}): {err}") from None
        if original in LOSSY_METHOD:
            _keep_lossy_history(dataset, original)
            note += " (decompressed; stays marked as lossy)"
        else:
            note += " (decompressed losslessly)"
    dataset.file_meta.TransferSyntaxUID = UID(target_syntax)
    try:
        dataset.save_as(destination, implicit_vr=target_syntax == ImplicitVRLittleEndian, little_endian=True,
                        enforce_file_format=True)
    except Exception as err:  # noqa: BLE001 - an element pydicom cannot write in the new encoding
        raise ConversionError(f"cannot write {source.name} as {_syntax_name(target_syntax)}: {err}") from None
    return Conversion(destination, note)


def _keep_lossy_history(dataset, original: str) -> None:  # noqa: ANN001 - a pydicom Dataset
    """Lossy Image Compression stays "01"; the method is named if the file did not name it."""
    dataset.LossyImageCompression = "01"
    if not dataset.get("LossyImageCompressionMethod"):
        dataset.LossyImageCompressionMethod = LOSSY_METHOD[original]
