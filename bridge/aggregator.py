"""Pending studies in the spool: group acknowledged instances by study, decide when one is due.

State lives on disk where a person can see it: ``.bridge/spool/<study-key>~<stamp>/<sop>.dcm``.
A study is *open* while instances may still join it; the zipper *claims* it once it has been
quiet for the timeout, and from then on new instances of the same study start a new folder
(so a late instance never slips into a ZIP being written and gets lost with its folder).

"Quiet" counts from the last bytes, not only the last complete image: an association that fed
a study (or is known to carry one of its images) and is still receiving keeps the study open,
so a large image over a slow link never splits its study into several ZIPs.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

_UID = re.compile(r"[0-9][0-9.]{0,63}")
_GENERATION_SEPARATOR = "~"
_CLASH_SEPARATOR = "-"  # a second, different file with the same SOP key is kept as "<key>-2"
MAX_SAME_KEY_FILES = 1000


def spool_key(path: Path) -> str:
    """The SOP key a spool file is stored under (``<arrival>-<key>.dcm``): also its ZIP member name."""
    return path.stem.split("-", 1)[-1]


def safe_key(uid: str) -> str:
    """A file-name-safe key for a UID: the UID itself when well formed, else a hash of it."""
    uid = uid.strip().rstrip("\x00")
    if _UID.fullmatch(uid):
        return uid
    return "x" + hashlib.sha1(uid.encode("utf-8", "replace")).hexdigest()


@dataclass
class PendingStudy:
    """One spool folder: a study's instances received so far.

    Files are named ``<arrival number>-<SOP key>.dcm`` so that sorting by name gives the
    arrival order ("first appearance" of recipient IDs) even across a restart.
    """

    key: str
    folder: Path
    last_arrival: float
    files: dict[str, Path] = field(default_factory=dict)  # SOP key -> file
    not_before: float = 0.0  # a retry after a transient zipping failure waits until then
    attempts: int = 0

    @property
    def image_count(self) -> int:
        return len(self.files)

    def due_at(self, timeout: float) -> float:
        return max(self.last_arrival + timeout, self.not_before)

    def place(self, sop_key: str, received: Path) -> tuple[str, Path]:
        """(key, file) for a received instance: an identical earlier copy's (stored once), else a
        new number; a *different* file with the same key gets a key of its own (``<key>-2``…)."""
        for number in range(1, MAX_SAME_KEY_FILES):
            key = sop_key if number == 1 else f"{sop_key}{_CLASH_SEPARATOR}{number}"
            existing = self.files.get(key)
            if existing is None:
                return key, self.folder / f"{len(self.files) + 1:06d}-{key}.dcm"
            if _same_bytes(existing, received):
                return key, existing
        raise OSError(errno.EEXIST, f"more than {MAX_SAME_KEY_FILES} different files for SOP key {sop_key}")

    @classmethod
    def adopt(cls, key: str, folder: Path, now: float) -> PendingStudy:
        files = {spool_key(path): path for path in sorted(folder.glob("*.dcm"))}
        return cls(key=key, folder=folder, last_arrival=now, files=files)


@dataclass(frozen=True)
class Stored:
    """Where ``Aggregator.store`` put an instance; ``renamed`` when another file had its name."""

    study: PendingStudy
    sop_key: str
    renamed: bool


@dataclass
class Aggregator:
    """Thread-safe bookkeeping of pending studies (receiver threads store, the zipper claims)."""

    spool: Path
    quiet_seconds: Callable[[], float]  # receive.timeout_seconds in force, read at every decision
    clock: Callable[[], float] = time.monotonic
    sync_on_store: bool = False  # receive.sync_before_ack: the file on stable storage before the answer
    _open: dict[str, PendingStudy] = field(default_factory=dict)
    _closed: list[PendingStudy] = field(default_factory=list)
    _changed: threading.Condition = field(default_factory=threading.Condition)
    _last_bytes: dict[int, float] = field(default_factory=dict)  # open association -> when bytes last came
    _fed: dict[int, set[str]] = field(default_factory=dict)  # open association -> study keys it fed

    def recover(self) -> list[PendingStudy]:
        """Adopt the spool folders left by an earlier run; their timeout starts again now."""
        now = self.clock()
        recovered: list[PendingStudy] = []
        with self._changed:
            for folder in sorted(self.spool.iterdir()):
                if not folder.is_dir():
                    continue
                key = folder.name.rsplit(_GENERATION_SEPARATOR, 1)[0]
                study = PendingStudy.adopt(key, folder, now)
                if not study.files:
                    shutil.rmtree(folder, ignore_errors=True)
                    continue
                previous = self._open.get(key)
                if previous is not None:
                    self._closed.append(previous)  # older generation: zip it, take no more
                self._open[key] = study
                recovered.append(study)
            self._changed.notify_all()
        return recovered

    def store(self, study_uid: str, sop_uid: str, received_file: Path, association: int | None = None,
              synced: bool = False) -> Stored:
        """Move a received file into its study's spool folder (identical resend: stored once).

        ``association`` (any int naming it) records that it fed this study: while it goes on
        receiving, the study stays open. ``synced``: the file's data is on stable storage already
        (the fast path's fdatasync); syncing it again is not free: ext4 answers an fdatasync of a
        clean file with a full disk-cache flush.
        """
        key = safe_key(study_uid)
        with self._changed:
            study = self._open.get(key)
            created = study is None
            if study is None:
                folder = self.spool / f"{key}{_GENERATION_SEPARATOR}{time.time_ns()}"
                folder.mkdir()
                study = PendingStudy(key=key, folder=folder, last_arrival=self.clock())
            sop_key = safe_key(sop_uid)
            stored_key, target = study.place(sop_key, received_file)
            if self.sync_on_store and not synced:
                _sync_file(received_file)
            _move(received_file, target, sync=self.sync_on_store)  # durable with the next journal commit:
            # an acknowledged image the rename did not reach after a power cut is filed at start-up
            # (receiver.file_incoming), so the answer need not wait for a second commit
            study.files[stored_key] = target
            if created:
                self._open[key] = study
                self._changed.notify_all()
            study.last_arrival = self.clock()
            if association is not None:
                self._last_bytes[association] = study.last_arrival
                self._fed.setdefault(association, set()).add(key)
            return Stored(study=study, sop_key=stored_key, renamed=stored_key != sop_key)

    def association_active(self, association: int, study_uid: str | None = None) -> None:
        """Bytes arrived on ``association`` (called per PDU or read: only a dict write).

        ``study_uid``: the study of the image in flight, when the caller already knows it.
        """
        now = self.clock()
        with self._changed:
            self._last_bytes[association] = now
            if study_uid is not None:
                self._fed.setdefault(association, set()).add(safe_key(study_uid))

    def association_ended(self, association: int) -> None:
        """The association is gone: its unfinished bytes hold no study open any more."""
        with self._changed:
            self._last_bytes.pop(association, None)
            self._fed.pop(association, None)
            self._changed.notify_all()

    def _due_at(self, study: PendingStudy, busy: dict[str, float]) -> float:
        """When an open ``study`` may be zipped: its last image and its feeders' last bytes + timeout."""
        quiet = self.quiet_seconds()
        return max(study.due_at(quiet), busy.get(study.key, study.last_arrival) + quiet)

    def _busy_studies(self) -> dict[str, float]:
        """Study key -> last bytes on any open association that fed it (caller holds the lock)."""
        busy: dict[str, float] = {}
        for association, keys in self._fed.items():
            seen = self._last_bytes.get(association)
            if seen is None:
                continue
            for key in keys:
                busy[key] = max(busy.get(key, seen), seen)
        return busy

    def claim_due(self) -> list[PendingStudy]:
        """Take the studies whose quiet time is over; no instance joins them afterwards."""
        now = self.clock()
        with self._changed:
            due = [s for s in self._closed if s.due_at(self.quiet_seconds()) <= now]
            self._closed = [s for s in self._closed if s not in due]
            busy = self._busy_studies()
            for key, study in list(self._open.items()):
                if self._due_at(study, busy) <= now:
                    due.append(self._open.pop(key))
            return due

    def retry_later(self, study: PendingStudy, delay_seconds: float) -> None:
        """Put a claimed study back (e.g. the disk was full); it is tried again after the delay."""
        with self._changed:
            study.not_before = self.clock() + delay_seconds
            study.attempts += 1
            self._closed.append(study)
            self._changed.notify_all()

    def wait_for_work(self, stop: threading.Event, max_wait: float = 1.0) -> None:
        """Block until the next study may be due, something changed, or ``max_wait`` passed."""
        with self._changed:
            busy = self._busy_studies()
            deadlines = [s.due_at(self.quiet_seconds()) for s in self._closed]
            deadlines += [self._due_at(s, busy) for s in self._open.values()]
            wait = max_wait if not deadlines else min(max_wait, max(0.0, min(deadlines) - self.clock()))
            if wait > 0 and not stop.is_set():
                self._changed.wait(wait)

    def wake(self) -> None:
        """Recompute the deadlines now (e.g. the quiet time in force changed)."""
        with self._changed:
            self._changed.notify_all()

    def pending(self) -> list[PendingStudy]:
        """A snapshot for status displays."""
        with self._changed:
            return [*self._open.values(), *self._closed]


def _same_bytes(first: Path, second: Path, chunk: int = 1024 * 1024) -> bool:
    """Byte-for-byte equal? (filecmp would cache every pair for the life of the process.)"""
    if first.stat().st_size != second.stat().st_size:
        return False
    with open(first, "rb") as a, open(second, "rb") as b:
        while True:
            block = a.read(chunk)
            if block != b.read(chunk):
                return False
            if not block:
                return True
def _sync_file(path: Path) -> None:
    """Its data on stable storage (cheap when the fast path synced it already)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        (getattr(os, "fdatasync", None) or os.fsync)(fd)
    finally:
        os.close(fd)


def _move(source: Path, target: Path, sync: bool = False) -> None:
    """Rename into place; copy (synced when ``sync``) then delete when the temp folder is on another
    file system."""
    try:
        os.replace(source, target)
    except OSError as err:
        if err.errno != errno.EXDEV:
            raise
        partial = target.with_suffix(".part")
        shutil.copyfile(source, partial)
        if sync:
            _sync_file(partial)
        os.replace(partial, target)
        os.unlink(source)
