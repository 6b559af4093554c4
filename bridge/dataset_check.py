"""Is a received dataset structurally complete? A walk over every element header, values skipped.

A sender that is cut off (killed, network dropped) or that sends a file already truncated on its
disk leaves a dataset shorter than its own elements claim. pynetdicom hands such a file to the
C-STORE handler as if it were whole; DCMTK's storescp refuses it. Before the bridge answers
success it walks every element header — into sequences, items (defined and undefined length,
nested), undefined-length UN (implicit VR inside) and encapsulated pixel data fragments — and
checks that the walk ends exactly at the end of the data with everything closed. Values are
skipped, never copied, so the walk costs microseconds per image whatever its size.

The walk is incremental (``DatasetWalker.feed``): headers may be split across chunks, so it can
follow bytes as they stream in from the network. Deflated Explicit VR Little Endian is inflated
on the fly (in bounded pieces) and the inflated stream is walked.

Tolerant where real files and DCMTK are: stray item/sequence delimiters in a dataset, an item
delimiter closing a defined-length item, trailing padding (FFFC,FFFC) (an ordinary element),
eight or more trailing zero bytes (DCMTK reads them as the end; fewer are a cut header, for
DCMTK too), an "explicit VR" dataset that is really implicit VR (detected on its first element,
as pydicom and DCMTK do), bytes after the end of a deflate stream.
"""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

from pydicom.datadict import DicomDictionary

IMPLICIT_LE_TS = "1.2.840.10008.1.2"
EXPLICIT_BE_TS = "1.2.840.10008.1.2.2"
DEFLATED_TS = "1.2.840.10008.1.2.1.99"
UNDEFINED = 0xFFFFFFFF
ITEM, ITEM_END, SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
PIXEL_DATA = 0x7FE00010
CHUNK_BYTES = 1024 * 1024
HEAD_BYTES = 64 * 1024  # the file meta and the headers before the pixel data, usually
INFLATE_PIECE_BYTES = 1024 * 1024  # a deflate bomb never inflates more than this at once
MAX_NESTING = 64  # real datasets nest a handful of levels; a hostile one could nest millions
_LONG_VRS = frozenset(v.encode() for v in ("OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR",
                                           "UT", "UV"))
_SHORT_VRS = frozenset(v.encode() for v in ("AE", "AS", "AT", "CS", "DA", "DS", "DT", "FD", "FL", "IS", "LO",
                                            "LT", "PN", "SH", "SL", "SS", "ST", "TM", "UI", "UL", "US"))
# In implicit VR only the dictionary says an element is a sequence; private ones stay opaque values
# (still bounded by their length, so a cut inside them is found all the same).
_SEQUENCE_TAGS = frozenset(tag for tag, entry in DicomDictionary.items() if entry[0] == "SQ")

_DATASET, _SEQUENCE, _ITEM, _FRAGMENTS = "dataset", "sequence", "item", "fragments"
_HOLDS_ELEMENTS = (_DATASET, _ITEM)
_PLAIN_LONG_VRS = _LONG_VRS - {b"SQ", b"UN"}  # UN: undefined length means a sequence


class IncompleteDataset(ValueError):
    """The data ends before its elements do, or is not structured as they claim; says where."""


def _tag_text(tag: int) -> str:
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


class _Frame:
    """One open container: the dataset, a sequence, an item, or pixel data fragments."""

    __slots__ = ("end", "implicit", "kind", "limit", "little", "start", "tag")

    def __init__(self, kind: str, tag: int, start: int, end: int | None, limit: int | None, implicit: bool,
                 little: bool) -> None:
        self.kind, self.tag, self.start, self.end, self.limit = kind, tag, start, end, limit
        self.implicit, self.little = implicit, little


_HEADER = {True: struct.Struct("<HHL"), False: struct.Struct(">HHL")}
_EXPLICIT = {True: struct.Struct("<HH2sH"), False: struct.Struct(">HH2sH")}
_LONG_LENGTH = {True: struct.Struct("<L"), False: struct.Struct(">L")}


class DatasetWalker:
    """Walk a dataset's element headers as its bytes arrive; ``finish`` says whether it is whole.

    ``feed`` raises IncompleteDataset as soon as the structure is self-contradictory (an element
    longer than its item); ``finish`` raises it when the data stopped early.
    ``start_offset`` only shifts the byte positions named in messages (e.g. the file meta's size).
    """

    def __init__(self, transfer_syntax: str, *, start_offset: int = 0) -> None:
        syntax = transfer_syntax.strip().rstrip("\x00")
        little = syntax != EXPLICIT_BE_TS
        self._stack = [_Frame(_DATASET, 0, start_offset, None, None, syntax == IMPLICIT_LE_TS, little)]
        self._inflater = zlib.decompressobj(-zlib.MAX_WBITS) if syntax == DEFLATED_TS else None
        self._position = start_offset  # of the next byte fed to the walk (inflated bytes when deflated)
        self._where = "byte" if self._inflater is None else "inflated byte"
        self._skip = 0  # value bytes still to pass
        self._skipping: tuple[str, int, int] = ("", 0, 0)  # (what, tag, declared length) of that value
        self._head = b""  # a header split across chunks
        self._head_at = 0
        self._first_element = True
        self._padding = False  # only zero bytes may follow
        self._padding_at = 0

    # -- public ----------------------------------------------------------------------------
    def feed(self, data: bytes | memoryview) -> None:
        if self._inflater is None:
            self._walk(memoryview(data))
            return
        inflater = self._inflater
        if inflater.eof:
            return  # bytes after the deflate stream (e.g. a pad byte to even length) carry nothing
        pending = bytes(data)
        while True:
            inflated = inflater.decompress(pending, INFLATE_PIECE_BYTES)
            self._walk(memoryview(inflated))
            pending = inflater.unconsumed_tail
            if inflater.eof or (not pending and len(inflated) < INFLATE_PIECE_BYTES):
                break  # else more input waits, or zlib holds more output for an empty call

    def finish(self) -> None:
        if self._inflater is not None and not self._inflater.eof:
            try:
                self._walk(memoryview(self._inflater.flush()))
            except zlib.error:
                pass
            raise IncompleteDataset(f"the deflated data ends before its deflate stream does "
                                    f"(after {self._position} inflated bytes)")
        if self._skip:
            what, tag, declared = self._skipping
            raise IncompleteDataset(f"{what} {_tag_text(tag)} declares {declared} bytes, "
                                    f"{declared - self._skip} left")
        if self._head:
            raise IncompleteDataset(f"cut inside the header of an element at {self._where} {self._head_at}")
        frame = self._stack[-1]
        if frame.kind == _DATASET:
            return
        if frame.end is not None:
            owner = f"sequence {_tag_text(frame.tag)}" + (" item" if frame.kind == _ITEM else "")
            raise IncompleteDataset(f"{owner} declares {frame.end - frame.start} bytes, "
                                    f"{self._position - frame.start} left")
        if frame.kind == _ITEM:
            raise IncompleteDataset(f"sequence {_tag_text(frame.tag)} item not closed")
        if frame.kind == _FRAGMENTS:
            raise IncompleteDataset(f"pixel data {_tag_text(frame.tag)} fragments not closed "
                                    f"(no sequence delimiter)")
        raise IncompleteDataset(f"sequence {_tag_text(frame.tag)} not closed")

    @property
    def skippable(self) -> int:
        """Value bytes the walk will pass without looking (a file reader may seek over them)."""
        return self._skip if self._inflater is None else 0

    def skipped(self, count: int) -> None:
        """``count`` value bytes were passed without feeding them (count <= ``skippable``)."""
        if count > self.skippable:
            raise ValueError("cannot skip more than the current value")
        self._skip -= count
        self._position += count

    # -- the walk ----------------------------------------------------------------------------
    def _walk(self, data: memoryview) -> None:
        if self._padding:
            if bytes(data).strip(b"\0"):
                raise IncompleteDataset(f"data after the trailing zero padding (from {self._where} "
                                        f"{self._padding_at})")
            self._position += len(data)
            return
        i, n = 0, len(data)
        stack = self._stack
        while True:
            if self._skip:
                take = min(self._skip, n - i)
                self._skip -= take
                i += take
                self._position += take
                if self._skip:
                    return
            while not self._head and stack[-1].end == self._position:
                stack.pop()
            if i == n:
                return
            frame = stack[-1]
            if not self._head and frame.kind in _HOLDS_ELEMENTS and not self._first_element:
                passed = self._pass_plain_elements(frame, data, i)
                if passed != i:
                    self._position += passed - i
                    i = passed
                    continue
            if self._head or n - i < 12:  # a header that may continue in the next chunk
                if not self._head:
                    self._head_at = self._position
                need = 8
                while True:
                    got = bytes(data[i : i + max(0, need - len(self._head))])
                    self._head += got
                    i += len(got)
                    self._position += len(got)
                    if len(self._head) < need:
                        return  # the chunk is used up; the header continues in the next one
                    full = self._header_size(frame, self._head)
                    if full == need:
                        break
                    need = full
                header, self._head = self._head, b""
                self._element(frame, memoryview(header), 0, self._head_at)
                if self._padding:
                    self._walk(data[i:])
                    return
                continue
            size = self._header_size(frame, data[i : i + 8])
            start = self._position
            self._position += size
            self._element(frame, data, i, start)
            i += size
            if self._padding:
                self._walk(data[i:])
                return

    def _pass_plain_elements(self, frame: _Frame, data: memoryview, i: int) -> int:
        """The fast path: step over whole elements of defined length that are no sequence and lie
        entirely in ``data``; return where the first other thing starts (anything else, the
        general path handles). About a third of the general path's cost per element."""
        n, base, end = len(data), self._position - i, frame.end
        stop = n if frame.limit is None else min(n, frame.limit - base)
        if frame.implicit:
            header = _HEADER[frame.little].unpack_from
            sequences = _SEQUENCE_TAGS
            while i + 8 <= stop:
                group, number, length = header(data, i)
                following = i + 8 + length
                if group == 0xFFFE or following > stop or length == UNDEFINED or (group << 16 | number) in sequences:
                    break
                i = following
                if end is not None and base + i == end:
                    break
            return i
        explicit, long_length = _EXPLICIT[frame.little].unpack_from, _LONG_LENGTH[frame.little].unpack_from
        short_vrs, long_vrs = _SHORT_VRS, _PLAIN_LONG_VRS
        while i + 12 <= stop:
            group, _, vr, length = explicit(data, i)
            if vr in short_vrs:
                following = i + 8 + length
            elif vr in long_vrs:
                (length,) = long_length(data, i + 8)
                following = i + 12 + length
            else:
                break
            if group == 0xFFFE or following > stop or length == UNDEFINED:
                break
            i = following
            if end is not None and base + i == end:
                break
        return i

    def _header_size(self, frame: _Frame, first: bytes | memoryview) -> int:
        """8 or 12; 8 while fewer than 8 bytes are known."""
        if len(first) < 8 or frame.implicit:
            return 8
        group = first[0] | (first[1] << 8) if frame.little else (first[0] << 8) | first[1]
        if group == 0xFFFE:
            return 8
        vr = bytes(first[4:6])
        if self._first_element and frame.kind == _DATASET and vr not in _LONG_VRS and vr not in _SHORT_VRS:
            frame.implicit = True  # "explicit VR" data that is implicit VR, as pydicom and DCMTK detect
            return 8
        return 12 if vr in _LONG_VRS else 8

    def _element(self, frame: _Frame, data: memoryview, i: int, start: int) -> None:
        """Act on the header at data[i:]; ``start`` is its position, ``self._position`` is past it."""
        self._first_element = False
        little = frame.little
        if frame.implicit or (data[i] | (data[i + 1] << 8) if little else (data[i] << 8) | data[i + 1]) == 0xFFFE:
            group, number, length = _HEADER[little].unpack_from(data, i)
            vr = None
        else:
            group, number, vr, length = _EXPLICIT[little].unpack_from(data, i)
            if vr in _LONG_VRS:
                (length,) = _LONG_LENGTH[little].unpack_from(data, i + 8)
            elif vr == b"\0\0" and group == number == length == 0 and len(self._stack) == 1:
                self._padding, self._padding_at = True, start  # zero bytes DCMTK reads as the end of the data
                return
            elif vr not in _SHORT_VRS and not vr.isalpha():
                raise IncompleteDataset(f"element {_tag_text((group << 16) | number)} at {self._where} {start} "
                                        f"has no valid VR ({bytes(vr)!r}): not a DICOM element header")
        tag = (group << 16) | number
        position = self._position
        if frame.limit is not None and position > frame.limit:
            raise IncompleteDataset(f"the header of element {_tag_text(tag)} at {self._where} {start} runs past "
                                    f"the end of sequence {_tag_text(frame.tag)}")
        kind = frame.kind
        if kind == _SEQUENCE or kind == _FRAGMENTS:
            if tag == SEQUENCE_END:
                if frame.end is None:
                    self._stack.pop()
                return
            if tag != ITEM:
                container = "sequence" if kind == _SEQUENCE else "pixel data"
                raise IncompleteDataset(f"{container} {_tag_text(frame.tag)} holds element {_tag_text(tag)} at "
                                        f"{self._where} {start} where an item was expected")
            if kind == _FRAGMENTS:
                if length == UNDEFINED:
                    raise IncompleteDataset(f"a fragment of pixel data {_tag_text(frame.tag)} has undefined length")
                self._pass_value("fragment of pixel data", frame.tag, length, frame)
                return
            self._open(_ITEM, frame.tag, length, frame, frame.implicit)
            return
        # a dataset or an item: elements
        if group == 0xFFFE:
            if tag == ITEM_END and kind == _ITEM and frame.end is None:
                self._stack.pop()
            elif tag == ITEM:
                raise IncompleteDataset(f"an item at {self._where} {start} outside any sequence")
            return  # stray delimiters: tolerated, as DCMTK and pydicom do
        if length == UNDEFINED:
            if tag == PIXEL_DATA and vr != b"SQ":
                self._open(_FRAGMENTS, tag, length, frame, frame.implicit)
            elif vr is None or vr == b"SQ":
                self._open(_SEQUENCE, tag, length, frame, frame.implicit)
            elif vr == b"UN":
                self._open(_SEQUENCE, tag, length, frame, True, little=True)  # CP-246: implicit VR LE inside
            elif vr in (b"OB", b"OW"):
                self._open(_FRAGMENTS, tag, length, frame, frame.implicit)
            else:
                raise IncompleteDataset(f"element {_tag_text(tag)} ({bytes(vr).decode('ascii', 'replace')}) "
                                        f"has undefined length")
            return
        if length and (vr == b"SQ" or (vr is None and tag in _SEQUENCE_TAGS)):
            self._open(_SEQUENCE, tag, length, frame, frame.implicit)
            return
        self._pass_value("element", tag, length, frame)

    def _pass_value(self, what: str, tag: int, length: int, frame: _Frame) -> None:
        if frame.limit is not None and self._position + length > frame.limit:
            raise IncompleteDataset(f"{what} {_tag_text(tag)} declares {length} bytes, only "
                                    f"{frame.limit - self._position} left in sequence {_tag_text(frame.tag)}")
        self._skip = length
        self._skipping = (what, tag, length)

    def _open(self, kind: str, tag: int, length: int, parent: _Frame, implicit: bool,
              little: bool | None = None) -> None:
        if length == UNDEFINED:
            end = None
        elif length == 0:
            return
        else:
            end = self._position + length
            if parent.limit is not None and end > parent.limit:
                raise IncompleteDataset(f"{'item of ' if kind == _ITEM else ''}sequence {_tag_text(tag)} declares "
                                        f"{length} bytes, only {parent.limit - self._position} left in its parent")
        if len(self._stack) > MAX_NESTING:
            raise IncompleteDataset(f"sequences nested deeper than {MAX_NESTING / 2:.0f} levels at {self._where} "
                                    f"{self._position}")
        limit = end if parent.limit is None or (end is not None and end < parent.limit) else parent.limit
        self._stack.append(_Frame(kind, tag, self._position, end, limit, implicit,
                                  parent.little if little is None else little))


def _file_meta(head: bytes, complete: bool) -> tuple[str, int]:
    """(transfer syntax, dataset offset) of a Part-10 file's first bytes; ``complete``: the whole file."""
    if len(head) < 132:
        raise IncompleteDataset(f"the file ends inside its preamble ({len(head)} bytes)")
    if head[128:132] != b"DICM":
        raise IncompleteDataset("no 'DICM' after the preamble: not a DICOM Part-10 file")
    pos, syntax = 132, ""
    while pos < len(head):
        if pos + 8 > len(head):
            if not complete:
                raise IncompleteDataset(f"the file meta is larger than {HEAD_BYTES} bytes")
            raise IncompleteDataset(f"cut inside the header of an element at byte {pos}")
        group, number, vr = struct.unpack_from("<HH2s", head, pos)
        if group != 0x0002:
            break
        if vr in _LONG_VRS:
            if pos + 12 > len(head):
                raise IncompleteDataset(f"cut inside the header of an element at byte {pos}")
            (length,) = struct.unpack_from("<L", head, pos + 8)
            start = pos + 12
        else:
            (length,) = struct.unpack_from("<H", head, pos + 6)
            start = pos + 8
        tag = (group << 16) | number
        if length == UNDEFINED or start + length > len(head):
            if not complete and length != UNDEFINED:
                raise IncompleteDataset(f"the file meta is larger than {HEAD_BYTES} bytes")
            raise IncompleteDataset(f"file meta element {_tag_text(tag)} declares {length} bytes, "
                                    f"{len(head) - start} left")
        if tag == 0x00020010:
            syntax = head[start : start + length].rstrip(b"\x00 ").decode("ascii", "replace")
        pos = start + length
    if not syntax:
        raise IncompleteDataset("the file meta has no Transfer Syntax UID (0002,0010)")
    return syntax, pos


def check_file(path: Path) -> None:
    """Walk a Part-10 file's meta and dataset; raise IncompleteDataset if it is not whole.

    Values of a plain dataset are passed with a seek, not read: the cost is the headers.
    """
    with open(path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        head = handle.read(HEAD_BYTES)
        syntax, start = _file_meta(head, complete=len(head) == size)
        walker = DatasetWalker(syntax, start_offset=start)
        walker.feed(memoryview(head)[start:])
        while True:
            ahead = walker.skippable
            if ahead:
                passed = min(ahead, size - handle.tell())
                handle.seek(passed, os.SEEK_CUR)
                walker.skipped(passed)
            chunk = handle.read(CHUNK_BYTES)
            if not chunk:
                break
            walker.feed(chunk)
        walker.finish()
