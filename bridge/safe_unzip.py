"""Unpack a ZIP from the outbox without trusting it, so that sending can start at once.

Entry names are never used as paths: every member is written to ``<work>/<n>.dcm``, so no
name can escape the work folder; names that try (absolute, ``..``, drive letters) or links
still fail the whole ZIP, because such a ZIP did not come from the messaging app. Sizes are
counted while writing, not taken from the headers (zip bombs lie about them).

``plan()`` checks every entry and reads only the first bytes of each member (its DICOM file
meta: SOP class, instance, transfer syntax), which is all the sender needs to open its
associations; ``extract_all()`` then unpacks the members in order, announcing each one, so the
first images are on their way while the rest is still being unpacked: handed to the sender in
memory while there is room (:class:`UnpackedMembers`), else written to their files.

Whatever goes wrong *reading* a member is the ZIP's fault (``ZipRejected``: ISA-L, which the
zipper installs as zipfile's zlib, raises its own error type, not ``zlib.error``); what goes
wrong *writing* is the disk's (``OSError``; the outbox waits when it is full).
"""

from __future__ import annotations

import os
import stat
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath

from .header_scan import HeaderScan, file_meta_and_scan, scan_header
from .instance import MODALITY
from .part10 import NO_META_MAX_BYTES, is_dicomdir, may_be_data_set, part10_copy
from .sender import FileMeta

MAX_ENTRIES = 50_000
MAX_TOTAL_BYTES = 16 * 1024**3
# A bomb is large *and* extremely compressed; real studies deflate 2-5x (a few blank images
# may reach 1000x, but not hundreds of MB of them).
BOMB_MIN_BYTES = 256 * 1024**2
BOMB_RATIO = 100
HEAD_BYTES = 16 * 1024
# Read first: the file meta and the Modality of nearly every image (inflating 16 kB heads cost
# 23 of plan()'s 50 ms for 500 CT images); a member whose header goes on is read to HEAD_BYTES.
FIRST_HEAD_BYTES = 4 * 1024
CHUNK = 1024 * 1024
MEMORY_BUDGET = 16 * 1024**2  # members held for the senders at once (the rest wait, or go to disk)
MEMORY_MEMBER_MAX = 8 * 1024**2  # a larger member always goes to disk
SPILL_AFTER_SECONDS = 0.5  # no room in memory for this long: the member goes to disk


def _head_facts(head: bytes, asked: int) -> tuple[tuple[str, str, str] | None, HeaderScan | None]:
    """(SOP class, instance, transfer syntax) and the Modality scan from a member's first bytes;
    either None when these bytes do not settle it (``asked``: fewer came, they are the whole file)."""
    return file_meta_and_scan(head, {MODALITY}, whole_file=len(head) < asked)


class ZipRejected(ValueError):
    """The ZIP is unsafe or unreadable; the message says why (it goes into the reason file)."""


def _unsafe_name(name: str) -> str | None:
    for pure in (PurePosixPath(name), PureWindowsPath(name)):
        if pure.is_absolute() or pure.drive or pure.root:
            return "absolute path"
        if ".." in pure.parts:
            return "'..' in the path"
    return None


def _is_link(info: zipfile.ZipInfo) -> bool:
    return info.create_system == 3 and stat.S_ISLNK(info.external_attr >> 16)


def check_entries(archive: zipfile.ZipFile) -> list[zipfile.ZipInfo]:
    """Refuse the whole ZIP for unsafe entries; return the file entries to unpack."""
    infos = archive.infolist()
    if len(infos) > MAX_ENTRIES:
        raise ZipRejected(f"{len(infos)} entries, more than the {MAX_ENTRIES} allowed")
    files = []
    for info in infos:
        why = _unsafe_name(info.filename)
        if why:
            raise ZipRejected(f"entry {info.filename!r} refused: {why}")
        if _is_link(info):
            raise ZipRejected(f"entry {info.filename!r} refused: it is a symbolic link")
        if info.flag_bits & 0x1:
            raise ZipRejected(f"entry {info.filename!r} is encrypted")
        if not info.is_dir():
            files.append(info)
    declared = sum(i.file_size for i in files)
    packed = max(sum(i.compress_size for i in files), 1)
    if declared > MAX_TOTAL_BYTES:
        raise ZipRejected(f"unpacks to {declared} bytes, more than the {MAX_TOTAL_BYTES} allowed")
    if declared > BOMB_MIN_BYTES and declared > packed * BOMB_RATIO:
        raise ZipRejected(f"unpacks {packed} bytes to {declared} (zip bomb?)")
    return files


def _what(err: BaseException) -> str:
    """The error's text, or its type when it has none (some decompressors raise bare errors)."""
    return str(err) or type(err).__name__


class ZipUnpacker:
    """One outbox ZIP: plan what to send from the member heads, then extract in order."""

    def __init__(self, zip_path: Path, work: Path) -> None:
        self.work = work
        self.skipped: list[str] = []  # "name: why", for the log book
        self.no_meta: list[str] = []  # members sent from a Part-10 copy (they had no file meta)
        self.cancelled = threading.Event()
        self._planned: list[tuple[zipfile.ZipInfo, FileMeta]] = []
        self._written: set[Path] = set()  # files ``plan()`` already wrote (data sets without file meta)
        self.modalities: dict[Path, str] = {}  # read from each member's head, for the log book
        self._total = 0  # bytes unpacked so far
        try:
            self._archive = zipfile.ZipFile(zip_path)
        except (zipfile.BadZipFile, OSError, EOFError) as err:
            raise ZipRejected(f"not a valid ZIP file, truncated or damaged ({err})") from None

    def plan(self) -> list[FileMeta]:
        """The DICOM files this ZIP will give, with their file meta; skips DICOMDIRs and non-DICOM files.

        A DICOMDIR is known by its SOP class, whatever its name. A member without file meta is
        unpacked now and, if it is a data set an SCP can store, replaced by a Part-10 copy.
        """
        self.work.mkdir(parents=True, exist_ok=True)
        for number, info in enumerate(check_entries(self._archive), start=1):
            target = self.work / f"{number:06d}.dcm"
            head = self._read_head(info, FIRST_HEAD_BYTES)
            found, scan = _head_facts(head, FIRST_HEAD_BYTES)
            if found is None or scan is None:  # a long file meta or header, or no file meta: look further
                head = self._read_head(info, HEAD_BYTES)
                found, scan = _head_facts(head, HEAD_BYTES)
            if found is None and may_be_data_set(head):
                found = self._without_meta(info, target)
            if found is None:
                self.skipped.append(f"{info.filename}: not a DICOM file")
            elif is_dicomdir(found[0]):
                self.skipped.append(f"{info.filename}: DICOMDIR (an index, not an image)")
                target.unlink(missing_ok=True)
                self._written.discard(target)
            else:
                self._planned.append((info, FileMeta(target, *found, label=info.filename)))
                if target in self._written:
                    scan = scan_header(target, {MODALITY})
                self.modalities[target] = scan.text(MODALITY) if scan else ""
        return [meta for _, meta in self._planned]

    def _without_meta(self, info: zipfile.ZipInfo, target: Path) -> tuple[str, str, str] | None:
        """A member without Part-10 file meta: unpack it and write a Part-10 copy if it is a data set."""
        if info.file_size > NO_META_MAX_BYTES:
            return None
        raw = target.with_suffix(".raw")
        try:
            self._total += self._copy_member(info, raw, self._total)
            found = part10_copy(raw, target)
        finally:
            raw.unlink(missing_ok=True)
        if found is not None:
            self._written.add(target)
            self.no_meta.append(info.filename)
        return found

    def _read_head(self, info: zipfile.ZipInfo, size: int) -> bytes:
        try:
            with self._archive.open(info) as member:
                return member.read(size)
        except Exception as err:  # noqa: BLE001 - any reading error (zlib, ISA-L, CRC, I/O) is a damaged ZIP
            raise ZipRejected(f"entry {info.filename!r} cannot be read: {_what(err)}") from None

    def extract_all(self, members: UnpackedMembers | None = None) -> None:
        """Unpack every planned member in order (sizes counted, CRC checked), announcing each one.

        With ``members`` each member goes to the sender in memory while there is room (the first
        always to disk: the log book reads its study values from it); without, all go to disk.
        """
        for index, (info, meta) in enumerate(self._planned):
            if self.cancelled.is_set():
                return
            if meta.path in self._written:
                pass
            elif members is not None and index > 0 and info.file_size <= MEMORY_MEMBER_MAX:
                data = self._read_member(info, self._total)
                self._total += len(data)
                if members.keep(meta.path, data, self.cancelled):
                    continue
                if self.cancelled.is_set():
                    return
                with open(meta.path, "wb") as sink:  # no room in memory: the sender reads it from disk
                    sink.write(data)
            else:
                self._total += self._copy_member(info, meta.path, self._total)
            if members is not None:
                members.mark(meta.path)

    def unpack_again(self, meta: FileMeta) -> None:
        """Write one member to its file once more (a retry of an image that was sent from memory)."""
        info = next(info for info, planned in self._planned if planned.path == meta.path)
        partial = meta.path.with_suffix(".part")
        self._copy_member(info, partial, 0)
        os.replace(partial, meta.path)  # a file under the member's name is always whole

    def _member_chunks(self, info: zipfile.ZipInfo, total_before: int) -> Iterator[bytes]:
        """A member's bytes; zipfile stops at the declared size and checks the CRC, we count too."""
        limit = min(MAX_TOTAL_BYTES - total_before, info.file_size)
        written = 0
        try:
            source = self._archive.open(info)
        except Exception as err:  # noqa: BLE001 - see _read
            raise ZipRejected(f"entry {info.filename!r} is damaged: {_what(err)}") from None
        with source:
            while chunk := self._read(source, info):
                written += len(chunk)
                if written > limit:
                    raise ZipRejected(f"entry {info.filename!r} unpacks far beyond its size (zip bomb?)")
                yield chunk

    def _read_member(self, info: zipfile.ZipInfo, total_before: int) -> bytes:
        return b"".join(self._member_chunks(info, total_before))

    def _copy_member(self, info: zipfile.ZipInfo, target: Path, total_before: int) -> int:
        """Copy one member to ``target``; OSError while writing is the disk's, not the ZIP's."""
        written = 0
        with open(target, "wb") as sink:
            for chunk in self._member_chunks(info, total_before):
                sink.write(chunk)
                written += len(chunk)
        return written

    @staticmethod
    def _read(source, info: zipfile.ZipInfo) -> bytes:  # noqa: ANN001 - zipfile.ZipExtFile
        try:
            return source.read(CHUNK)
        except Exception as err:  # noqa: BLE001 - zlib/ISA-L/CRC/EOF errors alike mean a damaged member
            raise ZipRejected(f"entry {info.filename!r} is damaged: {_what(err)}") from None

    def close(self) -> None:
        self._archive.close()


@dataclass
class UnpackedMembers:
    """The unpacked members on their way to the sender: in memory while there is room, else on disk.

    Why: writing every image to a file of its own and reading it back cost the sending bridge
    more CPU than inflating it (500 files of 530 kB: 0.88 s of CPU against 0.39 s for the same
    bytes in one file, and 0.58 s to inflate them). The unzip thread keeps up to
    ``MEMORY_BUDGET`` bytes of members for the senders, waiting at most ``SPILL_AFTER_SECONDS``
    for room before it writes a member to disk instead (so a sender that stopped taking can
    never stall the others). A member a sender took but did not deliver (the next try of an
    interrupted send, a storage-commitment resend) is unpacked again, to disk, from the ZIP,
    which stays claimed until the end.
    """

    unpacker: ZipUnpacker | None = None  # unpacks a member again for a later try
    stall_seconds: float = 600.0  # no new member for this long: unpacking is stuck
    _in_memory: dict[Path, bytes] = field(default_factory=dict)
    _on_disk: set[Path] = field(default_factory=set)
    _handed: set[Path] = field(default_factory=set)  # taken from memory once: unpacked again if asked again
    _buffered: int = 0
    _error: BaseException | None = None
    _done: bool = False
    _changed: threading.Condition = field(default_factory=threading.Condition)
    _again: threading.Lock = field(default_factory=threading.Lock)

    def keep(self, path: Path, data: bytes, cancelled: threading.Event) -> bool:
        """Unzip thread: hold ``data`` for the sender if there is room soon; False: write it to disk."""
        with self._changed:
            room = self._changed.wait_for(lambda: self._buffered + len(data) <= MEMORY_BUDGET or not self._in_memory
                                          or cancelled.is_set(), SPILL_AFTER_SECONDS)
            if not room or cancelled.is_set():
                return False
            self._in_memory[path] = data
            self._buffered += len(data)
            self._changed.notify_all()
            return True

    def mark(self, path: Path) -> None:
        """Unzip thread: the member is in its file."""
        with self._changed:
            self._on_disk.add(path)
            self._changed.notify_all()

    def finish(self, error: BaseException | None = None) -> None:
        """Unpacking ended; with ``error`` every waiting sender raises it (ZipRejected, OSError)."""
        with self._changed:
            self._error, self._done = error, True
            self._changed.notify_all()

    def wait(self, meta: FileMeta) -> None:
        """Until the member is unpacked (in memory or on disk); raises what stopped the unpacking."""
        with self._changed:
            self._wait(meta)

    def take(self, meta: FileMeta) -> bytes | None:
        """The sender's ``wait``: the member's bytes if held in memory (handed over once), else
        None once its file is there (unpacked again if it had been handed over before)."""
        with self._changed:
            self._wait(meta)
            data = self._in_memory.pop(meta.path, None)
            if data is not None:
                self._handed.add(meta.path)
                self._buffered -= len(data)
                self._changed.notify_all()
                return data
            if meta.path in self._on_disk:
                return None
        self._unpack_again(meta)
        return None

    def _wait(self, meta: FileMeta) -> None:
        def unpacked() -> bool:
            return meta.path in self._in_memory or meta.path in self._on_disk or meta.path in self._handed

        if not self._changed.wait_for(lambda: unpacked() or self._done, self.stall_seconds):
            raise ZipRejected(f"unpacking stalled for {self.stall_seconds:.0f} s")
        if not unpacked():
            raise self._error or ZipRejected("unpacking stopped")

    def _unpack_again(self, meta: FileMeta) -> None:
        with self._again:
            if meta.path not in self._on_disk and not meta.path.exists():  # the sender may have kept it (write_whole)
                if self.unpacker is None:
                    raise ZipRejected(f"{meta.name} is no longer unpacked")
                self.unpacker.unpack_again(meta)
                with self._changed:
                    self._on_disk.add(meta.path)
