"""Rewrite one top-level text element of a received DICOM file, leaving every other byte alone.

The recipient IDs must leave the file, but the PACS's bytes must not: no decoding and
re-encoding of the dataset (which would change padding, VRs, private tags or pixel data).
We locate the element's header and value in the file and splice in the new value, adjusting a
legacy group-length element if one covers it. The element stays, with an empty value when
nothing is left, unless an empty value is invalid for it (``REMOVED_WHEN_EMPTY``). Deflated
datasets are inflated, spliced and deflated again (their *dataset* bytes stay as received;
only the deflate stream changes).
"""

from __future__ import annotations

import shutil
import struct
import zlib
from dataclasses import dataclass
from typing import IO, Protocol

from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import Tag

from .header_scan import LONG_HEADER_VRS, SCAN_BYTES, dataset_start

DEFLATED_TS = "1.2.840.10008.1.2.1.99"

_BINARY_VRS = {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UV", "AT", "FL", "FD", "SL", "SS", "UL", "US"}
_COPY_CHUNK = 1024 * 1024
# Text elements that may be absent but never empty (Type 1C wherever they occur): one that the
# IDs leave empty is removed. Every other element is kept with an empty value (Type 2 elements
# such as PatientID must stay present). Measured with dciodvfy: an empty (0010,2201) is an error.
REMOVED_WHEN_EMPTY = frozenset({
    0x00102201,  # Patient Species Description (Patient module, Type 1C)
})


class ByteSink(Protocol):
    """Where a spliced file goes: a ZIP member, or a wrapper that watches the bytes."""

    def write(self, data: bytes | bytearray, /) -> int: ...


class PatchError(ValueError):
    """The element cannot be rewritten in place (binary VR, undefined length, …)."""


@dataclass(frozen=True)
class ElementSpan:
    """Where one element sits in the dataset stream and how it is encoded."""

    tag: int
    vr: str
    header_start: int
    value_start: int
    value_length: int
    implicit_vr: bool
    little_endian: bool
    group_length_value_at: int | None  # offset of the (gggg,0000) UL value, if present

    @property
    def end(self) -> int:
        return self.value_start + self.value_length


def make_span(tag: int, vr: str | None, value_start: int, length: int, implicit_vr: bool, little_endian: bool,
              group_length_value_at: int | None) -> ElementSpan:
    """Check that the element can be rewritten in place and describe where it sits."""
    if length == 0xFFFFFFFF:
        raise PatchError(f"element {Tag(tag)} has undefined length")
    vr = vr or "UN"
    if vr in _BINARY_VRS:
        raise PatchError(f"element {Tag(tag)} has binary VR {vr}, not text")
    header_length = 8 if implicit_vr or vr not in LONG_HEADER_VRS else 12
    return ElementSpan(tag=int(tag), vr=vr, header_start=value_start - header_length, value_start=value_start,
                       value_length=length, implicit_vr=implicit_vr, little_endian=little_endian,
                       group_length_value_at=group_length_value_at)


def find_element(dataset: Dataset, tag: int) -> ElementSpan | None:
    """The span of a top-level element in a dataset read by ``dcmread`` (not yet accessed)."""
    tag = Tag(tag)
    if tag not in dataset:
        return None
    raw = dataset.get_item(tag)
    if not isinstance(raw, RawDataElement):
        if not raw.value:
            return None  # an empty element has nothing to cut (pydicom may hand it out decoded)
        raise PatchError(f"element {tag} was already decoded; cannot locate its bytes")
    if raw.length == 0:
        return None
    if raw.value_tell is None:
        raise PatchError(f"element {tag} was already decoded; cannot locate its bytes")
    group_length_at = None
    group_tag = Tag(tag.group, 0)
    if group_tag in dataset:
        group_raw = dataset.get_item(group_tag)
        if isinstance(group_raw, RawDataElement) and group_raw.value_tell is not None and group_raw.length == 4:
            group_length_at = group_raw.value_tell
    return make_span(int(tag), raw.VR, raw.value_tell, raw.length, raw.is_implicit_VR, raw.is_little_endian,
                     group_length_at)


def encode_element(span: ElementSpan, value: bytes) -> bytes:
    """Header + value for ``span``'s tag and VR with a new value (padded to even length)."""
    if len(value) % 2:
        value += b" "
    order = "<" if span.little_endian else ">"
    tag = Tag(span.tag)
    header = struct.pack(f"{order}HH", tag.group, tag.element)
    if span.implicit_vr:
        header += struct.pack(f"{order}L", len(value))
    elif span.vr in LONG_HEADER_VRS:
        header += span.vr.encode("ascii") + b"\x00\x00" + struct.pack(f"{order}L", len(value))
    else:
        if len(value) > 0xFFFF:
            raise PatchError(f"new value too long for VR {span.vr}")
        header += span.vr.encode("ascii") + struct.pack(f"{order}H", len(value))
    return header + value


def _replacement(span: ElementSpan, new_value: bytes) -> bytes:
    if not new_value and span.tag in REMOVED_WHEN_EMPTY:
        return b""
    return encode_element(span, new_value)


def _patched_head(head: bytearray, span: ElementSpan, delta: int) -> bytearray:
    """Fix a legacy group length (gggg,0000) that covers the element, if the file has one."""
    if span.group_length_value_at is not None and delta:
        at = span.group_length_value_at
        order = "<" if span.little_endian else ">"
        (old,) = struct.unpack_from(f"{order}L", head, at)
        struct.pack_into(f"{order}L", head, at, old + delta)
    return head


def splice_file(source: IO[bytes], target: ByteSink, span: ElementSpan, new_value: bytes) -> None:
    """Copy ``source`` to ``target`` with the element's value replaced.

    An empty value keeps the element with length 0 (removing it would make the file invalid
    when the element is Type 2: PatientID, AccessionNumber…), except for the Type 1C elements in
    ``REMOVED_WHEN_EMPTY``, which are removed. ``span`` offsets are absolute
    file offsets (pydicom's case for non-deflated files). Only the bytes before the element
    are held in memory; the rest is streamed.
    """
    replacement = _replacement(span, new_value)
    delta = len(replacement) - (span.end - span.header_start)
    source.seek(0)
    head = bytearray(source.read(span.header_start))
    target.write(_patched_head(head, span, delta))
    target.write(replacement)
    source.seek(span.end)
    shutil.copyfileobj(source, target, _COPY_CHUNK)


def splice_deflated(source: IO[bytes], target: ByteSink, span: ElementSpan, new_value: bytes,
                    dataset_offset: int) -> None:
    """As :func:`splice_file` for a deflated dataset: ``span`` is relative to the inflated stream."""
    source.seek(0)
    meta = source.read(dataset_offset)
    inflated = zlib.decompress(source.read(), -zlib.MAX_WBITS)
    replacement = _replacement(span, new_value)
    delta = len(replacement) - (span.end - span.header_start)
    head = _patched_head(bytearray(inflated[: span.header_start]), span, delta)
    patched = bytes(head) + replacement + inflated[span.end :]
    compressor = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -zlib.MAX_WBITS)
    target.write(meta)
    target.write(compressor.compress(patched) + compressor.flush())


def dataset_offset(source: IO[bytes]) -> int:
    """Offset of the dataset after the 128-byte preamble, 'DICM' and the group-0002 meta."""
    source.seek(0)
    offset = dataset_start(source.read(SCAN_BYTES))
    if offset is None:
        raise PatchError("not a DICOM Part-10 file (no DICM prefix or an unreadable file meta)")
    return offset
