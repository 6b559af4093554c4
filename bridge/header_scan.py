"""A fast walk over a DICOM file's element headers, for the few values the bridge needs.

pydicom parses every element into Python objects (about 1.4 ms for a CT header); the receiver
and the zipper only need a handful of UIDs and the byte position of the CRID element, for
hundreds of files per study. This walk reads the first 64 KB once and steps from header to
header (sequences of undefined length included). Whatever it cannot answer with certainty
(deflated data, a header past 64 KB, odd encodings) returns None, and callers use pydicom.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

SCAN_BYTES = 64 * 1024
DEFLATED_TS = "1.2.840.10008.1.2.1.99"
IMPLICIT_LE_TS = "1.2.840.10008.1.2"
EXPLICIT_BE_TS = "1.2.840.10008.1.2.2"
UNDEFINED = 0xFFFFFFFF
ITEM, ITEM_END, SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
# Explicit-VR elements whose header has 2 reserved bytes and a 4-byte length.
LONG_HEADER_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"})
_LONG_HEADER_VR_BYTES = frozenset(vr.encode("ascii") for vr in LONG_HEADER_VRS)
_SHORT_HEADER_VR_BYTES = frozenset(vr.encode("ascii") for vr in (
    "AE", "AS", "AT", "CS", "DA", "DS", "DT", "FD", "FL", "IS", "LO", "LT", "PN", "SH", "SL", "SS", "ST", "TM", "UI",
    "UL", "US"))
_PLAIN_LONG_VR_BYTES = _LONG_HEADER_VR_BYTES - {b"SQ", b"UN"}  # never walked into, whatever their length
_IMPLICIT_HEADER = {"<": struct.Struct("<HHL"), ">": struct.Struct(">HHL")}
_EXPLICIT_HEADER = {"<": struct.Struct("<HH2sH"), ">": struct.Struct(">HH2sH")}
_LONG_LENGTH = {"<": struct.Struct("<L"), ">": struct.Struct(">L")}


class _Unsure(Exception):
    """The walk left the buffer or met something it does not handle: use pydicom."""


@dataclass(frozen=True)
class RawElement:
    tag: int
    vr: str | None  # None for implicit VR
    header_start: int
    value_start: int
    length: int
    value: bytes


@dataclass(frozen=True)
class HeaderScan:
    transfer_syntax: str
    implicit_vr: bool
    little_endian: bool
    elements: dict[int, RawElement]
    group_lengths: dict[int, int]  # group -> offset of its (gggg,0000) UL value

    def text(self, tag: int) -> str:
        element = self.elements.get(tag)
        return element_text(element.value) if element else ""


def element_text(value: bytes) -> str:
    """A text element's raw value as the bridge reads it (padding and spaces stripped)."""
    return value.rstrip(b"\x00 ").decode("ascii", "replace").strip()


class _Walker:
    def __init__(self, head: bytes, order: str, implicit: bool) -> None:
        self.head, self.order, self.implicit = head, order, implicit

    def element(self, pos: int) -> tuple[int, str | None, int, int]:
        """(tag, VR, value start, value length) of the element header at ``pos``."""
        head, order = self.head, self.order
        if pos + 8 > len(head):
            raise _Unsure
        group, number = struct.unpack_from(order + "HH", head, pos)
        tag = (group << 16) | number
        if self.implicit or group == 0xFFFE:
            (length,) = struct.unpack_from(order + "L", head, pos + 4)
            return tag, None, pos + 8, length
        vr = head[pos + 4 : pos + 6]
        if vr in _LONG_HEADER_VR_BYTES:
            if pos + 12 > len(head):
                raise _Unsure
            (length,) = struct.unpack_from(order + "L", head, pos + 8)
            return tag, vr.decode("ascii"), pos + 12, length
        if not vr.isalpha():
            raise _Unsure
        (length,) = struct.unpack_from(order + "H", head, pos + 6)
        return tag, vr.decode("ascii"), pos + 8, length

    def pass_plain(self, pos: int, wanted: set[int] | frozenset[int], last_wanted: int) -> tuple[int, int]:
        """(position, last tag) after the run of elements from ``pos`` that the walk only steps over:
        not wanted, not after ``last_wanted``, no group length, defined length, no sequence, a known
        VR, wholly in the bytes (anything else is left to :meth:`element`); last tag -1 when none.

        The header walk of a CT image meets about 120 elements before the Study Instance UID: this
        loop steps over them in a third of the time (it runs for every image received)."""
        head, end, last = self.head, len(self.head), -1
        if self.implicit:
            header = _IMPLICIT_HEADER[self.order].unpack_from
            while pos + 8 <= end:
                group, number, length = header(head, pos)
                tag = group << 16 | number
                following = pos + 8 + length
                if (tag > last_wanted or tag in wanted or number == 0 or group == 0xFFFE or length == UNDEFINED
                        or following > end):
                    break
                pos, last = following, tag
            return pos, last
        explicit, long_length = _EXPLICIT_HEADER[self.order].unpack_from, _LONG_LENGTH[self.order].unpack_from
        short_vrs, long_vrs = _SHORT_HEADER_VR_BYTES, _PLAIN_LONG_VR_BYTES
        while pos + 12 <= end:
            group, number, vr, length = explicit(head, pos)
            tag = group << 16 | number
            if tag > last_wanted or tag in wanted or number == 0 or group == 0xFFFE:
                break
            if vr in short_vrs:
                following = pos + 8 + length
            elif vr in long_vrs:
                (length,) = long_length(head, pos + 8)
                following = pos + 12 + length
                if length == UNDEFINED:
                    break
            else:
                break
            if following > end:
                break
            pos, last = following, tag
        return pos, last

    def skip_value(self, vr: str | None, start: int, length: int) -> int:
        """Position after a value; undefined lengths are walked item by item."""
        if length != UNDEFINED:
            return start + length
        if vr not in (None, "SQ"):
            raise _Unsure  # undefined-length pixel data or UN: not expected in a header
        pos = start
        while True:
            tag, _, item_start, item_length = self.element(pos)
            if tag == SEQUENCE_END:
                return item_start
            if tag != ITEM:
                raise _Unsure
            if item_length != UNDEFINED:
                pos = item_start + item_length
                continue
            pos = item_start
            while True:
                tag, nested_vr, value_start, value_length = self.element(pos)
                if tag == ITEM_END:
                    pos = value_start
                    break
                pos = self.skip_value(nested_vr, value_start, value_length)


def _file_meta(head: bytes) -> tuple[dict[int, str], int]:
    """Group-0002 values (always explicit VR little endian) and the offset where the dataset starts."""
    if head[128:132] != b"DICM":
        raise _Unsure
    walker, pos, values = _Walker(head, "<", implicit=False), 132, {}
    while pos + 8 <= len(head) and struct.unpack_from("<H", head, pos)[0] == 0x0002:
        tag, _, start, length = walker.element(pos)
        if start + length > len(head):
            raise _Unsure
        values[tag] = head[start : start + length].rstrip(b"\x00 ").decode("ascii", "replace")
        pos = start + length
    return values, pos


def _meta(head: bytes) -> tuple[str, int]:
    """Transfer syntax and dataset offset from the file meta."""
    values, pos = _file_meta(head)
    if not values.get(0x00020010):
        raise _Unsure
    return values[0x00020010], pos


def dataset_start(head: bytes) -> int | None:
    """Where the dataset begins after the preamble, 'DICM' and the file meta; None if not Part 10."""
    try:
        return _file_meta(head)[1]
    except (_Unsure, struct.error):
        return None


def file_meta_from_head(head: bytes) -> tuple[str, str, str] | None:
    """(SOP class, SOP instance, transfer syntax) from a file's first bytes, or None if not there."""
    return file_meta_and_scan(head, None, whole_file=False)[0]


def file_meta_and_scan(head: bytes, wanted: set[int] | None,
                       whole_file: bool) -> tuple[tuple[str, str, str] | None, HeaderScan | None]:
    """``file_meta_from_head`` and ``scan_head`` (when ``wanted``) of the same bytes, the file meta
    walked once: the outbox plans every member of a ZIP before the first image goes."""
    try:
        values, pos = _file_meta(head)
    except (_Unsure, struct.error):
        return None, None
    found = (values.get(0x00020002, ""), values.get(0x00020003, ""), values.get(0x00020010, ""))
    if not all(found):
        return None, None
    return found, None if wanted is None else _scan_dataset(head, found[2], pos, wanted, whole_file)


def scan_header(path: Path, wanted: set[int]) -> HeaderScan | None:
    """Raw values of the ``wanted`` top-level tags (absent ones are absent), or None if unsure."""
    with open(path, "rb") as handle:
        head = handle.read(SCAN_BYTES)
    return scan_head(head, wanted, whole_file=len(head) < SCAN_BYTES)


def scan_head(head: bytes, wanted: set[int], whole_file: bool) -> HeaderScan | None:
    """``scan_header`` of a Part-10 file's first bytes (``whole_file``: they are all of it)."""
    try:
        syntax, pos = _meta(head)
    except (_Unsure, struct.error):
        return None
    return _scan_dataset(head, syntax, pos, wanted, whole_file)


def _scan_dataset(head: bytes, syntax: str, pos: int, wanted: set[int], whole_file: bool) -> HeaderScan | None:
    """The top-level walk of ``scan_head`` from the dataset's start ``pos``."""
    if syntax == DEFLATED_TS:
        return None
    try:
        walker = _Walker(head, ">" if syntax == EXPLICIT_BE_TS else "<", implicit=syntax == IMPLICIT_LE_TS)
        elements, group_lengths = _top_level(walker, pos, wanted, ends_file=whole_file)
    except (_Unsure, struct.error):
        return None
    return HeaderScan(syntax, walker.implicit, walker.order == "<", elements, group_lengths)


def scan_dataset_start(data: bytes, syntax: str, wanted: set[int]) -> dict[int, bytes] | None:
    """Raw values of the ``wanted`` top-level tags in the first bytes of a dataset (no file meta),
    as ``scan_header`` reads them from a file; None when ``data`` ends before the walk is sure."""
    peek = peek_dataset(data, syntax, frozenset(wanted))
    return None if peek is None else peek.values(wanted)


@dataclass(frozen=True)
class DatasetPeek:
    """What a walk over a dataset's first bytes settled, even when the bytes ended before the last wanted tag.

    Every ``wanted`` tag below ``settled_below`` is in ``elements`` or certainly absent at the top level
    (elements are in ascending order); ``data`` holds the bytes walked, for decoding an element with pydicom.
    """

    wanted: frozenset[int]
    elements: dict[int, RawElement]
    settled_below: int
    implicit_vr: bool
    little_endian: bool
    data: bytes

    def settled(self, tags: set[int] | frozenset[int]) -> bool:
        """Whether every one of ``tags`` was looked for and is known (found or absent)."""
        return tags <= self.wanted and max(tags) < self.settled_below

    def values(self, tags: set[int] | frozenset[int]) -> dict[int, bytes] | None:
        """Raw values of ``tags`` (an absent one is absent), or None when the walk did not settle them all."""
        if not self.settled(tags):
            return None
        return {tag: element.value for tag, element in self.elements.items() if tag in tags}

    def encoded(self, tags: set[int] | frozenset[int]) -> bytes:
        """The found elements of ``tags``, header and value, as they were encoded (a dataset of their own)."""
        return b"".join(self.data[element.header_start : element.value_start + element.length]
                        for tag, element in sorted(self.elements.items()) if tag in tags)


def peek_dataset(data: bytes, syntax: str, wanted: frozenset[int]) -> DatasetPeek | None:
    """Walk the first bytes of a dataset (no file meta) for the ``wanted`` top-level tags, as far as the
    bytes go; None for a deflated dataset (its bytes are not the elements)."""
    if syntax == DEFLATED_TS or not wanted:
        return None
    walker = _Walker(data, ">" if syntax == EXPLICIT_BE_TS else "<", implicit=syntax == IMPLICIT_LE_TS)
    elements: dict[int, RawElement] = {}
    progress = _Progress()
    try:
        _top_level(walker, 0, wanted, ends_file=False, elements=elements, progress=progress)
        settled_below = UNDEFINED + 1  # walked past the last wanted tag: all settled
    except (_Unsure, struct.error):
        settled_below = progress.settled_below
    return DatasetPeek(wanted, elements, settled_below, walker.implicit, walker.order == "<", data)


@dataclass
class _Progress:
    """How far a top-level walk got: every tag below ``settled_below`` was walked over."""

    settled_below: int = 0


def _top_level(walker: _Walker, pos: int, wanted: set[int] | frozenset[int], ends_file: bool,
               elements: dict[int, RawElement] | None = None,
               progress: _Progress | None = None) -> tuple[dict[int, RawElement], dict[int, int]]:
    """The wanted elements and the group lengths up to the last wanted tag; _Unsure if the bytes end first
    (unless ``ends_file``: the bytes are the whole file, so a tag not met is absent). ``progress``, when
    given, follows the walk, so that a caller knows what was settled before an _Unsure."""
    head = walker.head
    last_wanted = max(wanted)
    elements = {} if elements is None else elements
    progress = _Progress() if progress is None else progress
    group_lengths: dict[int, int] = {}
    while True:
        pos, passed = walker.pass_plain(pos, wanted, last_wanted)
        if passed >= 0:
            progress.settled_below = passed + 1
        if pos == len(head) and ends_file:
            break  # end of a small file
        tag, vr, start, length = walker.element(pos)
        progress.settled_below = tag  # every tag before this one was walked over
        if tag > last_wanted:
            break
        if tag in wanted:
            if length == UNDEFINED or start + length > len(head):
                raise _Unsure
            elements[tag] = RawElement(tag, vr, pos, start, length, head[start : start + length])
        elif tag & 0xFFFF == 0 and length == 4:
            group_lengths[tag >> 16] = start
        pos = walker.skip_value(vr, start, length)
        progress.settled_below = tag + 1
    return elements, group_lengths
