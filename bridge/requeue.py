"""Act on failures from the console: "send again" and "zip again" (was: ``mv`` in a shell).

*Send again* moves a ZIP from Outbox_Failed back into Outbox_Auto and removes its reason
file; the outbox sends it like any new ZIP. *Zip again* moves a study's files from its folder
in Inbox_Failed into a new spool folder; it is zipped and routed after the quiet time, as if
received now. Both write a log-book row naming who did it.

A UI attached to a service cannot reach the service's spool bookkeeping, so it leaves a
request file in ``.bridge/requests``; the service's :class:`RequestWatcher` carries it out.
"""

from __future__ import annotations

import getpass
import json
import logging
import os
import shutil
import threading
import time
import uuid
from pathlib import Path

from .aggregator import Aggregator, PendingStudy, safe_key
from .instance import read_study_uid
from .layout import StorageLayout, fsync_path
from .logbook import FAILED, INFO, RECEIVE, SEND, LogBook, LogEntry

log = logging.getLogger(__name__)

REASON_SUFFIX = ".reason.txt"
POLL_SECONDS = 0.5


class RequeueError(RuntimeError):
    """The file or folder cannot be taken again (message says why)."""


def who() -> str:
    try:
        user = getpass.getuser()
    except Exception:  # noqa: BLE001 - no user name in this environment
        user = "?"
    return f"{user} (terminal UI, pid {os.getpid()})"


def _inside(path: Path, folder: Path) -> bool:
    return path.resolve().parent == folder.resolve()


def send_again(layout: StorageLayout, logbook: LogBook, zip_path: Path, by: str) -> Path:
    """Outbox_Failed/X.zip → Outbox_Auto/X.zip (a free name); its reason file goes."""
    if not _inside(zip_path, layout.outbox_failed) or not zip_path.is_file():
        raise RequeueError(f"{zip_path} is not a ZIP in {layout.outbox_failed}")
    target = layout.outbox_auto / zip_path.name
    number = 1
    while target.exists():
        number += 1
        target = layout.outbox_auto / f"{zip_path.stem}-again{number}{zip_path.suffix}"
    os.replace(zip_path, target)
    zip_path.with_name(zip_path.name + REASON_SUFFIX).unlink(missing_ok=True)
    fsync_path(layout.outbox_auto)
    logbook.add(LogEntry(action=SEND, status=INFO, target=str(target),
                         detail=f"{zip_path.name} moved from Outbox_Failed back to Outbox_Auto by {by}: sent again"))
    return target


def reason_text(target: Path, limit: int = 20_000) -> str:
    """The reason file beside a failed ZIP, or inside a failed study folder ("" when none)."""
    reason = target / "reason.txt" if target.is_dir() else target.with_name(target.name + REASON_SUFFIX)
    try:
        return reason.read_text(encoding="utf-8", errors="replace")[:limit]
    except OSError:
        return ""


def take_failed_study(layout: StorageLayout, folder: Path) -> PendingStudy:
    """Move a study's files from Inbox_Failed into a new spool folder (reason.txt is dropped)."""
    if not _inside(folder, layout.inbox_failed) or not folder.is_dir():
        raise RequeueError(f"{folder} is not a study folder in {layout.inbox_failed}")
    files = sorted(folder.glob("*.dcm"))
    if not files:
        raise RequeueError(f"{folder} holds no DICOM files")
    try:
        key = safe_key(read_study_uid(files[0]))
    except Exception as err:  # noqa: BLE001 - an unreadable file cannot be routed
        raise RequeueError(f"{files[0].name} is not readable DICOM: {err}") from None
    spool_folder = layout.spool / f"{key}~{time.time_ns()}"
    spool_folder.mkdir()
    for number, path in enumerate(files, start=1):
        name = path.name if "-" in path.stem else f"{number:06d}-{safe_key(path.stem)}.dcm"
        os.replace(path, spool_folder / name)
    (folder / "reason.txt").unlink(missing_ok=True)
    try:
        folder.rmdir()
    except OSError:
        pass  # something else was in it: leave it for a person
    return PendingStudy.adopt(key, spool_folder, 0.0)


def zip_again(layout: StorageLayout, logbook: LogBook, aggregator: Aggregator, folder: Path, by: str) -> PendingStudy:
    """Inbox_Failed/<study> → the spool; zipped after the quiet time, as if received now."""
    study = take_failed_study(layout, folder)
    study.last_arrival = aggregator.clock()
    aggregator.retry_later(study, 0.0)
    logbook.add(LogEntry(action=RECEIVE, status=INFO, image_count=study.image_count, target=str(study.folder),
                         detail=f"{folder.name} taken from Inbox_Failed by {by}: zipped again after "
                                f"{aggregator.quiet_seconds():g} s"))
    return study


def request_zip_again(layout: StorageLayout, folder: Path, by: str) -> None:
    """For an attached UI: ask the service to zip a failed study again."""
    requests = layout.work / "requests"
    requests.mkdir(exist_ok=True)
    tmp = requests / f"{uuid.uuid4().hex}.tmp"
    tmp.write_text(json.dumps({"zip_again": str(folder), "by": by}), encoding="utf-8")
    os.replace(tmp, tmp.with_suffix(".json"))


class RequestWatcher:
    """The service's side of :func:`request_zip_again` (polls the requests folder)."""

    def __init__(self, layout: StorageLayout, logbook: LogBook, aggregator: Aggregator,
                 stop: threading.Event, poll_seconds: float = POLL_SECONDS) -> None:
        self.layout = layout
        self.logbook = logbook
        self.aggregator = aggregator
        self.stop = stop
        self.poll_seconds = poll_seconds
        self.folder = layout.work / "requests"
        self._thread = threading.Thread(target=self._run, name="requests", daemon=True)

    def start(self) -> None:
        self.folder.mkdir(exist_ok=True)
        self._thread.start()

    def _run(self) -> None:
        while not self.stop.wait(self.poll_seconds):
            for request in sorted(self.folder.glob("*.json")):
                self.carry_out(request)

    def carry_out(self, request: Path) -> None:
        try:
            data = json.loads(request.read_text(encoding="utf-8"))
            zip_again(self.layout, self.logbook, self.aggregator, Path(data["zip_again"]), str(data["by"]))
        except RequeueError as err:
            self.logbook.add(LogEntry(action=RECEIVE, status=FAILED, detail=f"zip again refused: {err}"))
        except (OSError, ValueError, KeyError) as err:
            log.error("request %s not carried out: %s", request.name, err)
        finally:
            try:
                request.unlink()
            except OSError:
                shutil.rmtree(request, ignore_errors=True)
