"""The outbox: ZIPs the messaging app drops in Outbox_Auto go to the PACS (manual §5).

A ZIP is taken only when complete: its size and time stamp have not changed for
``STABLE_SECONDS`` and it opens as a ZIP. It is then *claimed* by a rename into
``.bridge/outbox/`` (so nobody else touches it and a restart finds it again), unpacked safely,
sent, and deleted — or moved to Outbox_Failed with ``<name>.reason.txt``. A ZIP that stays
invalid for ``INVALID_AFTER_SECONDS`` (not a ZIP, truncated) fails the same way.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
import uuid
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import watchfiles

from .events import EventBus, OutboxZipDone
from .header_scan import scan_header
from .instance import MODALITY, read_study_fields
from .layout import StorageLayout, fsync_path
from .logbook import FAILED, SEND, SUCCESS, WARNING, LogBook, LogEntry
from .naming import log_columns, modality_field
from .pacs import SendSettings
from .safe_unzip import ReadyFiles, ZipRejected, ZipUnpacker
from .sender import FileMeta, SendingInterrupted, SendReport, TransientSendError, send_with_retries

log = logging.getLogger(__name__)

STABLE_SECONDS = 0.5
INVALID_AFTER_SECONDS = 30.0
POLL_SECONDS = 0.1
CLAIM_SEPARATOR = "__"


@dataclass
class _Seen:
    size: int
    mtime_ns: int
    since: float


@dataclass
class CompletenessTracker:
    """Decides when a ZIP in the outbox is complete (stable and valid) or hopeless."""

    clock: Callable[[], float] = time.monotonic
    _seen: dict[Path, _Seen] = field(default_factory=dict)

    def check(self, paths: list[Path]) -> tuple[list[Path], list[Path]]:
        """(ready to send, invalid for too long) among ``paths``; others keep waiting."""
        now = self.clock()
        ready, invalid = [], []
        present = set(paths)
        for gone in [p for p in self._seen if p not in present]:
            del self._seen[gone]
        for path in paths:
            try:
                info = path.stat()
            except FileNotFoundError:
                continue
            seen = self._seen.get(path)
            if seen is None or (seen.size, seen.mtime_ns) != (info.st_size, info.st_mtime_ns):
                self._seen[path] = _Seen(info.st_size, info.st_mtime_ns, now)
                continue
            quiet = now - seen.since
            if quiet < STABLE_SECONDS:
                continue
            if zipfile.is_zipfile(path):
                ready.append(path)
                del self._seen[path]
            elif quiet >= INVALID_AFTER_SECONDS:
                invalid.append(path)
                del self._seen[path]
        return ready, invalid


class Outbox:
    """Watches Outbox_Auto and sends what appears, one ZIP at a time, on its own thread."""

    def __init__(self, layout: StorageLayout, logbook: LogBook, bus: EventBus,
                 settings: Callable[[], SendSettings], stop: threading.Event) -> None:
        self.layout = layout
        self.logbook = logbook
        self.bus = bus
        self.settings = settings
        self.stop = stop
        self.tracker = CompletenessTracker()
        self._thread = threading.Thread(target=self._run, name="outbox", daemon=True)

    def start(self) -> None:
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def join(self, timeout: float) -> None:
        if self._thread.is_alive():
            self._thread.join(timeout)

    # -- the loop -------------------------------------------------------------------------------
    def _run(self) -> None:
        for claimed in sorted(self.layout.outbox_work.glob("*.zip")):  # left by a crash: send again
            self.process(claimed)
        self._poll()
        for _changes in watchfiles.watch(self.layout.outbox_auto, stop_event=self.stop, yield_on_timeout=True,
                                         rust_timeout=int(POLL_SECONDS * 1000), raise_interrupt=False):
            self._poll()

    def _poll(self) -> None:
        candidates = sorted(p for p in self.layout.outbox_auto.iterdir() if p.suffix.lower() == ".zip")
        ready, invalid = self.tracker.check(candidates)
        for path in invalid:
            claimed = self._claim(path)
            if claimed is not None:
                self._fail(claimed, "not a valid ZIP file (or truncated): it did not open as a ZIP "
                                    f"within {INVALID_AFTER_SECONDS:.0f} s of its last change", [], 0, {})
        for path in ready:
            if self.stop.is_set():
                return
            claimed = self._claim(path)
            if claimed is not None:
                self.process(claimed)

    def _claim(self, path: Path) -> Path | None:
        target = self.layout.outbox_work / f"{uuid.uuid4().hex[:12]}{CLAIM_SEPARATOR}{path.name}"
        try:
            os.replace(path, target)
        except FileNotFoundError:
            return None  # taken away meanwhile
        return target

    # -- one ZIP ------------------------------------------------------------------------------
    def process(self, claimed: Path) -> None:
        """Unpack while sending (with retries), then delete or move to Outbox_Failed; logs a row."""
        work = claimed.with_name(claimed.name + ".d")
        shutil.rmtree(work, ignore_errors=True)
        report = SendReport()
        metas: list[FileMeta] = []
        skipped: list[str] = []
        columns: dict[str, object] = {}
        unpacker: ZipUnpacker | None = None
        extractor: threading.Thread | None = None
        ready: ReadyFiles | None = None
        try:
            unpacker = ZipUnpacker(claimed, work)
            metas = unpacker.plan()
            skipped = unpacker.skipped
            if not metas:
                raise ZipRejected("the ZIP holds no DICOM files")
            ready = ReadyFiles()
            extractor = threading.Thread(target=_extract, args=(unpacker, ready), name="unzip", daemon=True)
            extractor.start()
            settings = self.settings()
            send_with_retries(settings.target, metas, report, retries=settings.retries,
                              retry_delay_seconds=settings.retry_delay_seconds,
                              parallel=settings.parallel_associations, wait=ready.wait, pause=self.stop.wait)
            extractor.join()
            columns = study_columns([m.path for m in metas])
            if report.failed:
                raise ZipRejected(f"{len(report.failed)} of {len(metas)} images were not stored: "
                                  + "; ".join(sorted(set(report.failed.values())))[:2000])
        except SendingInterrupted:
            return  # the claimed ZIP stays in .bridge/outbox and is sent after the restart
        except (ZipRejected, TransientSendError, OSError, ValueError) as err:
            if not columns and metas and ready is not None:
                columns = _first_file_columns(metas[0], ready)  # the failure row names the patient too
            self._fail(claimed, str(err), skipped, len(metas), columns)
            return
        finally:
            if unpacker is not None:
                unpacker.cancelled.set()
                if extractor is not None:
                    extractor.join()
                unpacker.close()
            shutil.rmtree(work, ignore_errors=True)
        claimed.unlink()
        self._log(claimed, WARNING if report.warnings or skipped else SUCCESS, len(metas), columns,
                  f"{len(report.delivered)} images stored in the PACS" + self._notes(skipped, report))

    def _fail(self, claimed: Path, reason: str, skipped: list[str], image_count: int,
              columns: dict[str, object]) -> None:
        """Move the ZIP, unchanged, to Outbox_Failed with ``<name>.reason.txt`` beside it."""
        name = claimed.name.split(CLAIM_SEPARATOR, 1)[-1]
        target = self.layout.outbox_failed / name
        number = 1
        while target.exists() or target.with_name(target.name + ".reason.txt").exists():
            number += 1
            target = self.layout.outbox_failed / f"{Path(name).stem}-{number}{Path(name).suffix}"
        notes = "".join(f"skipped {entry}\n" for entry in skipped)
        target.with_name(target.name + ".reason.txt").write_text(f"{reason}\n{notes}", encoding="utf-8")
        os.replace(claimed, target)
        fsync_path(self.layout.outbox_failed)
        self._log(claimed, FAILED, image_count, columns, reason, target)

    @staticmethod
    def _notes(skipped: list[str], report: SendReport) -> str:
        notes = []
        if report.warnings:
            notes.append(f"{len(report.warnings)} with warning status")
        if skipped:
            notes.append("skipped: " + "; ".join(skipped[:10]))
        return f" ({'; '.join(notes)})" if notes else ""

    def _log(self, claimed: Path, status: str, image_count: int, columns: dict[str, Any], detail: str,
             target: Path | None = None) -> None:
        name = claimed.name.split(CLAIM_SEPARATOR, 1)[-1]
        where = str(target) if target is not None else name
        self.logbook.add(LogEntry(action=SEND, status=status, detail=detail, image_count=image_count,
                                  target=where, **columns))
        self.bus.publish(OutboxZipDone(zip_name=name, target=where, status=status))


def _extract(unpacker: ZipUnpacker, ready: ReadyFiles) -> None:
    """Unpacking thread: announce each file; a failure ends every wait with its reason."""
    try:
        unpacker.extract_all(ready.mark)
        ready.finish()
    except (ZipRejected, OSError) as err:
        ready.finish(str(err))


def _first_file_columns(first: FileMeta, ready: ReadyFiles) -> dict[str, object]:
    """Study columns from the first file alone, once it is unpacked (or {} if it never is)."""
    try:
        ready.wait(first)
    except ZipRejected:
        return {}
    return study_columns([first.path])


def study_columns(files: list[Path]) -> dict[str, Any]:
    """The log book's study columns for a ZIP being sent (first file + every file's modality)."""
    try:
        study = read_study_fields(files[0])
    except Exception:  # noqa: BLE001 - the row is written without study columns
        return {}
    modalities = []
    for path in files:
        scan = scan_header(path, {MODALITY})
        modalities.append(scan.text(MODALITY) if scan else "")
    return log_columns(study.patient_name, study.birth_date, study.study_date, study.study_description,
                       modality_field(tuple(modalities)))
