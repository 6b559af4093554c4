"""``dicombridge send PATH``: a folder of DICOM files (recursively) or a ZIP, straight to the PACS.

Uses the outbox's engine: the same safe unpacking, contexts from the files' meta, retries and
statuses; one log-book row (action Send) like a ZIP from the outbox.
"""

from __future__ import annotations

import sys
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

from . import exit_codes
from .header_scan import file_meta_from_head
from .layout import StorageLayout
from .logbook import FAILED, SEND, SUCCESS, WARNING, LogBook, LogEntry
from .outbox import study_columns
from .pacs import send_options
from .part10 import NO_META_MAX_BYTES, is_dicomdir, may_be_data_set, part10_copy
from .safe_unzip import HEAD_BYTES, ZipRejected, ZipUnpacker
from .sender import FileMeta, SendReport, TransientSendError, conversion_summary, send_with_retries
from .settings import Settings

Progress = Callable[[int, int], None]


def folder_files(folder: Path, work: Path) -> tuple[list[FileMeta], list[str]]:
    """DICOM files under ``folder`` with their meta; the rest (and DICOMDIRs) as skipped notes.

    A data set without file meta is sent from a Part-10 copy written into ``work`` (``part10``).
    """
    metas, skipped = [], []
    for number, path in enumerate(sorted(p for p in folder.rglob("*") if p.is_file()), start=1):
        with open(path, "rb") as handle:
            head = handle.read(HEAD_BYTES)
        found = file_meta_from_head(head)
        source = path
        if found is None and may_be_data_set(head) and path.stat().st_size <= NO_META_MAX_BYTES:
            work.mkdir(parents=True, exist_ok=True)
            source = work / f"{number:06d}.dcm"
            found = part10_copy(path, source)
        if found is None:
            skipped.append(f"{path}: not a DICOM file")
        elif is_dicomdir(found[0]):
            skipped.append(f"{path}: DICOMDIR (an index, not an image)")
        else:
            metas.append(FileMeta(source, *found, label=str(path) if source != path else ""))
    return metas, skipped


def _send(settings: Settings, metas: list[FileMeta], progress: Progress, work: Path) -> SendReport:
    started = [0]
    lock = threading.Lock()

    def count(_meta: FileMeta) -> None:
        with lock:
            started[0] += 1
            progress(started[0], len(metas))

    def pause(seconds: float) -> bool:
        print(f"\nthe PACS did not answer; trying again in {seconds:.0f} s", file=sys.stderr)
        time.sleep(seconds)
        return False

    options = send_options(settings)
    return send_with_retries(options.target, metas, SendReport(), retries=options.retries,
                             retry_delay_seconds=options.retry_delay_seconds,
                             parallel=options.parallel_associations, wait=count, pause=pause,
                             convert_into=work / "converted")


def send_path(path: Path, settings: Settings, progress: Progress) -> tuple[SendReport, list[str], int]:
    """Send a folder or ZIP; returns (report, skipped notes, number of DICOM files)."""
    with tempfile.TemporaryDirectory(prefix="dicombridge-send-") as work:
        if path.is_dir():
            metas, skipped = folder_files(path, Path(work) / "without-meta")
        elif zipfile.is_zipfile(path):
            unpacker = ZipUnpacker(path, Path(work) / "unpacked")
            try:
                metas = unpacker.plan()
                unpacker.extract_all()
            finally:
                unpacker.close()
            skipped = unpacker.skipped
        else:
            raise ZipRejected(f"{path} is neither a folder nor a ZIP file")
        if not metas:
            raise ZipRejected(f"{path} holds no DICOM files")
        report = _send(settings, metas, progress, Path(work))
        _log(settings, path, report, skipped, metas)
    return report, skipped, len(metas)


def _log(settings: Settings, path: Path, report: SendReport, skipped: list[str], metas: list[FileMeta]) -> None:
    layout = StorageLayout(settings.storage_folder)
    layout.ensure()
    logbook = LogBook(layout.logbook_db)
    try:
        status = FAILED if report.failed else WARNING if (report.warnings or skipped) else SUCCESS
        detail = (f"dicombridge send {path}: {len(report.delivered)} stored, {len(report.warnings)} with warnings, "
                  f"{len(report.failed)} failed" + (f"; skipped {len(skipped)}" if skipped else "")
                  + (f"; {conversion_summary(report.converted)}" if report.converted else ""))
        logbook.add(LogEntry(action=SEND, status=status, detail=detail, image_count=len(metas), target=str(path),
                             **study_columns([m.path for m in metas])))
    finally:
        logbook.close()


def run_send(path: Path, settings: Settings, show_progress: bool = True) -> int:
    """CLI entry: progress on stderr, a summary; the exit code says which class of failure (``exit_codes``)."""
    if not settings.send_host:
        print("dicombridge send: send.host is not set in the settings", file=sys.stderr)
        return exit_codes.BAD_SETTINGS
    if not path.exists():
        print(f"dicombridge send: {path}: no such file or folder", file=sys.stderr)
        return exit_codes.BAD_INPUT

    def progress(done: int, total: int) -> None:
        if not show_progress:
            return
        width = 30
        filled = width * done // max(total, 1)
        print(f"\rsending [{'#' * filled}{'.' * (width - filled)}] {done}/{total}", end="", file=sys.stderr,
              flush=True)

    try:
        report, skipped, total = send_path(path, settings, progress)
    except TransientSendError as err:
        print(f"\ndicombridge send: {err}", file=sys.stderr)
        return exit_codes.for_send_failure(err.failure)
    except (ZipRejected, zipfile.BadZipFile, OSError) as err:
        print(f"\ndicombridge send: {err}", file=sys.stderr)
        return exit_codes.BAD_INPUT
    print(file=sys.stderr)
    print(f"sent {len(report.delivered)} of {total}: {len(report.warnings)} with warnings, "
          f"{len(report.failed)} failed, {len(skipped)} skipped")
    if report.converted:
        print(f"  {conversion_summary(report.converted)}")
    for failed_path, why in sorted(report.failed.items()):
        print(f"  failed {failed_path.name}: {why}")
    return exit_codes.IMAGES_REFUSED if report.failed else exit_codes.OK
