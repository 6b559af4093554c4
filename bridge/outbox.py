"""The outbox: ZIPs the messaging app drops in Outbox_Auto go to the PACS.

README: "What happens to a ZIP in Outbox_Auto (sending)".

A ZIP is taken only when complete: a regular file whose size and time stamp have not changed
for ``STABLE_SECONDS`` (seen by the bridge, or shown by the time stamp itself) and that opens
as a ZIP (:class:`CompletenessTracker`). It is then *claimed* by a rename into its own
folder ``.bridge/outbox/<claim>/`` (so nobody else touches it, a restart finds it again, and
its name, up to 255 bytes, still fits), unpacked safely, sent, and deleted — or moved to
Outbox_Failed with ``<name>.reason.txt``. What is not a ZIP after ``INVALID_AFTER_SECONDS``,
or not a regular file at all (a named pipe, a folder), fails the same way without being opened.

The loop cannot die: each step is guarded, one ZIP's failure ends that ZIP only, and a ZIP
that cannot even be moved is skipped with a log-book row. A PACS that is unreachable, refuses
associations or answers "out of resources" is an *outage*, not a failure: the ZIP stays
claimed (the others wait in Outbox_Auto, in order), a C-ECHO probes every ``PROBE_SECONDS``,
and sending resumes when it answers. Only ``send.give_up_after_hours`` of waiting fails a ZIP
for that; ``send.notify_after_minutes`` into an outage one row asks for attention (a mail).
A full disk while unpacking waits too (``DISK_FULL_RETRY_SECONDS``).

With ``send.storage_commitment`` the ZIP is deleted only when the PACS has also committed every
image it stored (:mod:`bridge.commitment`); instances it reports failed are sent and asked for
once more, then the ZIP fails naming them; no report within ``send.commit_timeout_minutes`` is
an outage of its own kind ("waiting for storage commitment"): sent and asked again later.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import stat
import threading
import time
import uuid
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from .commitment import CommitmentError, CommitmentLedger, CommitmentResult, request_commitment
from .events import EventBus, OutboxZipDone
from .header_scan import scan_header
from .instance import MODALITY, read_study_record
from .layout import StorageLayout, fsync_path
from .logbook import FAILED, SEND, SUCCESS, WARNING, LogBook, LogEntry
from .pacs import SendSettings
from .safe_unzip import UnpackedMembers, ZipRejected, ZipUnpacker
from .sender import (
    FileMeta,
    PacsTarget,
    PacsUnreachable,
    SendingInterrupted,
    SendReport,
    TransientSendError,
    conversion_summary,
    echo,
    images_and_reasons,
    send_with_retries,
)
from .study_record import log_columns
from .supervisor import ThreadFactory, plain_thread

log = logging.getLogger(__name__)

STABLE_SECONDS = 0.5
INVALID_AFTER_SECONDS = 30.0
POLL_SECONDS = 0.1
PROBE_SECONDS = 30.0
DISK_FULL_RETRY_SECONDS = 10.0
ERROR_PAUSE_SECONDS = 5.0
UNPACKED = "unpacked"
REASON_SUFFIX = ".reason.txt"
NAME_MAX_BYTES = 255
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
CLAIM_SEPARATOR = "__"  # claims of earlier versions: .bridge/outbox/<id>__<name>.zip
COMMIT_POLL_SECONDS = 1.0  # how often a wait for a commitment report looks at the clock and the stop
REPORT_ON_SAME_ASSOCIATION_SECONDS = 5.0  # the N-ACTION's association stays open this long for a report
PACS_UNREACHABLE = "PACS unreachable"
WAITING_FOR_COMMITMENT = "waiting for storage commitment"


class CommitmentNotConfirmed(TransientSendError):
    """No storage commitment report in time: the ZIP waits, is sent and committed again later."""


def shown(name: str) -> str:
    """A file name as text for the log book and mails (names not in UTF-8 get U+FFFD)."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def clock_time(seconds: float) -> str:
    return datetime.fromtimestamp(seconds).strftime("%H:%M:%S")


@dataclass
class _Seen:
    size: int
    mtime_ns: int
    since: float


@dataclass
class CompletenessTracker:
    """Decides when a ZIP in the outbox is complete (stable and valid) or hopeless.

    Stable: nothing written to it for ``STABLE_SECONDS``, which either the bridge saw itself
    (size and time stamp unchanged between its looks) or the file's own time stamp shows (every
    write moves it): a ZIP written elsewhere and renamed in, the usual way to deliver, is taken
    at the first look instead of half a second later. A file that is still being written does
    not open as a ZIP (its central directory comes last), whatever its time stamp says. "Invalid
    for too long" counts only what the bridge saw itself: a copy that keeps an old time stamp
    while it runs is never failed for it.
    """

    clock: Callable[[], float] = time.monotonic
    wall_clock: Callable[[], float] = time.time  # compared with the files' time stamps
    _seen: dict[Path, _Seen] = field(default_factory=dict)

    def check(self, paths: list[Path]) -> tuple[list[Path], list[Path]]:
        """(ready to send, invalid for too long) among ``paths``; others keep waiting.

        Only regular files are opened (``lstat``: a named pipe would block ``is_zipfile``).
        """
        now, wall = self.clock(), self.wall_clock()
        ready, invalid = [], []
        present = set(paths)
        for gone in [p for p in self._seen if p not in present]:
            del self._seen[gone]
        for path in paths:
            try:
                info = path.lstat()
            except FileNotFoundError:
                continue
            if not stat.S_ISREG(info.st_mode):
                continue
            seen = self._seen.get(path)
            if seen is None or (seen.size, seen.mtime_ns) != (info.st_size, info.st_mtime_ns):
                seen = self._seen[path] = _Seen(info.st_size, info.st_mtime_ns, now)
            observed = now - seen.since
            if max(observed, wall - info.st_mtime_ns / 1e9) < STABLE_SECONDS:
                continue
            if _opens_as_zip(path):
                ready.append(path)
                del self._seen[path]
            elif observed >= INVALID_AFTER_SECONDS:
                invalid.append(path)
                del self._seen[path]
        return ready, invalid


def _opens_as_zip(path: Path) -> bool:
    try:
        return zipfile.is_zipfile(path)
    except OSError:
        return False


@dataclass
class Outage:
    """The PACS cannot take our ZIPs right now; one row when it starts, one when it ends."""

    since: float  # wall clock
    reason: str
    next_try: float
    target: PacsTarget
    notified: bool = False
    what: str = PACS_UNREACHABLE  # or WAITING_FOR_COMMITMENT


class Outbox:
    """Watches Outbox_Auto and sends what appears, one ZIP at a time, on its own thread."""

    def __init__(self, layout: StorageLayout, logbook: LogBook, bus: EventBus,
                 settings: Callable[[], SendSettings], stop: threading.Event,
                 clock: Callable[[], float] = time.time,
                 thread_factory: ThreadFactory = plain_thread,
                 commitment: CommitmentLedger | None = None) -> None:
        self.layout = layout
        self.commitment = commitment or CommitmentLedger()  # the engine's, which its receiver feeds
        self.logbook = logbook
        self.bus = bus
        self.settings = settings
        self.stop = stop
        self.clock = clock  # wall clock: outage times are shown to people and survive in claim names
        self.tracker = CompletenessTracker()
        self.outage: Outage | None = None
        self._first_seen: dict[str, float] = {}
        self._progress: dict[Path, SendReport] = {}  # claimed ZIP -> images stored in earlier tries
        self._skipped: set[Path] = set()  # claimed ZIPs that could not even be moved to Outbox_Failed
        self._refused: set[tuple[str, int]] = set()  # non-regular entries already logged (name, inode)
        self._trouble = ""  # the last unexpected error, logged once until a step succeeds
        self._disk_full_logged = False
        self._committing: tuple[str, float] | None = None  # (ZIP name, since) while a report is awaited
        self._thread = thread_factory("outbox", self._run)

    def start(self) -> None:
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def join(self, timeout: float) -> None:
        if self._thread.is_alive():
            self._thread.join(timeout)

    def status_text(self) -> str:
        """"PACS unreachable since 10:02, 3 ZIPs waiting, next try 10:15:30" (empty when all is well)."""
        outage, committing = self.outage, self._committing
        if outage is None:
            if committing is not None:
                return f"{WAITING_FOR_COMMITMENT} of {shown(committing[0])} since {clock_time(committing[1])[:5]}"
            return ""
        return (f"{outage.what} since {clock_time(outage.since)[:5]}, {self._waiting_count()} ZIPs waiting, "
                f"next try {clock_time(outage.next_try)}")

    # -- the loop -------------------------------------------------------------------------------
    def _run(self) -> None:
        self._recover_claims()
        while not self.stop.is_set():
            try:
                busy = self._step()
                self._trouble = ""
            except Exception as err:  # noqa: BLE001 - the outbox must never stop: log, pause, go on
                self._unexpected(err)
                self.stop.wait(ERROR_PAUSE_SECONDS)
                continue
            if not busy:
                self.stop.wait(POLL_SECONDS)

    def _unexpected(self, err: Exception) -> None:
        why = f"{type(err).__name__}: {err}"
        log.exception("outbox step failed")
        if why != self._trouble:  # once per distinct problem, not every few seconds
            self._trouble = why
            self.logbook.add(LogEntry(action=SEND, status=FAILED,
                                      detail=f"outbox problem ({shown(why)}); sending goes on in "
                                             f"{ERROR_PAUSE_SECONDS:.0f} s; details in dicombridge.log"))

    def _step(self) -> bool:
        """One turn: look at Outbox_Auto, then send (or probe for) the ZIP at the head. True if it did work."""
        self._ensure_folders()
        head = self._head()
        ready = self._poll()
        if head is None:
            if not ready:
                return False
            head = self._claim(ready[0])
            if head is None:
                return True
        if self.outage is not None and not self._outage_allows_try(head):
            return False
        self.process(head)
        return True

    def _ensure_folders(self) -> None:
        """Outbox_Auto or Outbox_Failed deleted while running: create them again, and say so."""
        for folder in (self.layout.outbox_auto, self.layout.outbox_failed, self.layout.outbox_work):
            if not folder.is_dir():
                folder.mkdir(parents=True, exist_ok=True)
                self.logbook.add(LogEntry(action=SEND, status=WARNING, target=str(folder),
                                          detail=f"{folder.name} was missing (deleted?) and was created again"))

    def _head(self) -> Path | None:
        """The claimed ZIP to send next (oldest claim first), if any."""
        for claim in sorted(self.layout.outbox_work.iterdir()):
            if claim.is_dir():
                zips = [p for p in claim.iterdir() if p.name != UNPACKED]
                if zips and zips[0] not in self._skipped:
                    return zips[0]
        return None

    def _poll(self) -> list[Path]:
        """Ready ZIPs in Outbox_Auto, in name order; fails the invalid and the non-regular ones."""
        candidates: list[Path] = []
        odd: list[Path] = []
        with os.scandir(self.layout.outbox_auto) as entries:
            for entry in entries:
                if not entry.name.lower().endswith(".zip"):
                    continue
                path = Path(entry.path)
                (candidates if entry.is_file(follow_symlinks=False) else odd).append(path)
        now = self.clock()
        names = {p.name for p in candidates}
        self._first_seen = {name: self._first_seen.get(name, now) for name in names}
        for path in sorted(odd):
            self._refuse_irregular(path)
        ready, invalid = self.tracker.check(sorted(candidates))
        for path in invalid:
            claimed = self._claim(path)
            if claimed is not None:
                self._fail(claimed, "not a valid ZIP file (or truncated): it did not open as a ZIP "
                                    f"within {INVALID_AFTER_SECONDS:.0f} s of its last change", [], 0, {})
        return ready

    def _refuse_irregular(self, path: Path) -> None:
        """A named pipe, folder or link called ``*.zip`` is never opened: to Outbox_Failed unread."""
        try:
            info = path.lstat()
        except FileNotFoundError:
            return
        kind = ("a named pipe" if stat.S_ISFIFO(info.st_mode) else "a folder" if stat.S_ISDIR(info.st_mode)
                else "a symbolic link" if stat.S_ISLNK(info.st_mode) else "not a regular file")
        if (path.name, info.st_ino) in self._refused:
            return
        self._refused.add((path.name, info.st_ino))
        claimed = self._claim(path)
        if claimed is not None:
            self._fail(claimed, f"{shown(path.name)} is {kind}, not a ZIP file: it was not opened", [], 0, {})

    def _claim(self, path: Path) -> Path | None:
        """Move a ZIP into a claim folder of its own, named so that claims sort by first sight."""
        since = self._first_seen.get(path.name, self.clock())
        folder = self.layout.outbox_work / f"{int(since * 1e9):020d}-{uuid.uuid4().hex[:8]}"
        folder.mkdir()
        target = folder / path.name
        try:
            os.replace(path, target)
        except FileNotFoundError:
            folder.rmdir()
            return None  # taken away meanwhile
        except OSError:
            folder.rmdir()
            raise
        self._remove_old_reason(path.name)
        return target

    def _remove_old_reason(self, name: str) -> None:
        """A ZIP moved back from Outbox_Failed by hand: its old reason no longer applies."""
        failed = self.layout.outbox_failed / _fitting_name(name)
        reason = failed.with_name(failed.name + REASON_SUFFIX)
        try:
            if not failed.exists():
                reason.unlink(missing_ok=True)
        except OSError as err:
            log.warning("cannot remove the old reason file %s: %s", reason, err)

    def _recover_claims(self) -> None:
        """Claims left by a crash or a stop are sent again; empty ones and old-style ones tidied."""
        work = self.layout.outbox_work
        work.mkdir(parents=True, exist_ok=True)
        for old in sorted(work.glob(f"*{CLAIM_SEPARATOR}*.zip")):  # an earlier version's claim
            folder = work / f"{int(self.clock() * 1e9):020d}-{uuid.uuid4().hex[:8]}"
            folder.mkdir()
            os.replace(old, folder / old.name.split(CLAIM_SEPARATOR, 1)[1])
        for leftover in work.glob("*.d"):
            shutil.rmtree(leftover, ignore_errors=True)
        for claim in work.iterdir():
            if claim.is_dir():
                shutil.rmtree(claim / UNPACKED, ignore_errors=True)
                if not any(claim.iterdir()):
                    claim.rmdir()

    # -- outages ------------------------------------------------------------------------------
    def _outage_allows_try(self, head: Path) -> bool:
        """During an outage: give up on an old ZIP, or probe when due; True when sending may resume."""
        outage = self.outage
        assert outage is not None
        settings = self.settings()
        now = self.clock()
        if self._gave_up(head, settings, now):
            return False
        self._maybe_notify(outage, settings, now)
        if settings.target != outage.target:
            outage.target, outage.next_try = settings.target, now  # the settings changed: try them at once
        if now < outage.next_try:
            return False
        result = echo(settings.target)
        if not result.ok:
            outage.reason = result.message
            outage.next_try = self.clock() + PROBE_SECONDS
            return False
        return True

    def _gave_up(self, head: Path, settings: SendSettings, now: float) -> bool:
        """Fail ``head`` if it has waited ``give_up_after_hours``."""
        waited = now - _claim_time(head)
        if waited < settings.give_up_after_hours * 3600 or self.outage is None:
            return False
        outage = self.outage
        state = "unreachable" if outage.what == PACS_UNREACHABLE else outage.what
        self._fail(head, f"the PACS could not take it for {waited / 3600:.1f} hours (send.give_up_after_hours = "
                         f"{settings.give_up_after_hours}); {state} since {clock_time(outage.since)}: "
                         f"{outage.reason}", [], 0, {})
        return True

    def _maybe_notify(self, outage: Outage, settings: SendSettings, now: float) -> None:
        if outage.notified or now - outage.since < settings.notify_after_minutes * 60:
            return
        outage.notified = True
        self.logbook.add(LogEntry(action=SEND, status=WARNING, needs_attention=True,
                                  detail=f"{_still(outage.what)} after {settings.notify_after_minutes} minutes: "
                                         f"{self.status_text()}; {outage.reason}. The ZIPs wait in the outbox "
                                         f"and are sent when it answers (up to {settings.give_up_after_hours} h)"))

    def _outage_began(self, reason: str, settings: SendSettings, what: str = PACS_UNREACHABLE) -> None:
        now = self.clock()
        if self.outage is not None:
            self.outage.reason, self.outage.next_try, self.outage.what = reason, now + PROBE_SECONDS, what
            return
        self.outage = Outage(since=now, reason=reason, next_try=now + PROBE_SECONDS, target=settings.target, what=what)
        log.warning("%s: %s", what, reason)
        self.logbook.add(LogEntry(action=SEND, status=WARNING,
                                  detail=f"{self.status_text()}: {reason}. The ZIPs stay in the outbox; a C-ECHO "
                                         f"probes every {PROBE_SECONDS:.0f} s"))

    def _outage_ended(self) -> None:
        outage, self.outage = self.outage, None
        if outage is None:
            return
        minutes = (self.clock() - outage.since) / 60
        unreachable = outage.what == PACS_UNREACHABLE
        answers = "PACS answers again" if unreachable else "PACS answers the storage commitment request again"
        state = "unreachable" if unreachable else WAITING_FOR_COMMITMENT
        self.logbook.add(LogEntry(action=SEND, status=SUCCESS,
                                  detail=f"{answers} after {minutes:.0f} min ({state} since "
                                         f"{clock_time(outage.since)[:5]}); sending the {self._waiting_count()} "
                                         f"waiting ZIPs"))

    def _waiting_count(self) -> int:
        return outbox_waiting(self.layout)

    # -- one ZIP ------------------------------------------------------------------------------
    def process(self, claimed: Path) -> None:
        """Unpack while sending (with retries), then delete or move to Outbox_Failed; logs a row.

        A transient failure leaves the ZIP claimed (an outage); a full disk leaves it to wait.
        """
        work = claimed.parent / UNPACKED
        shutil.rmtree(work, ignore_errors=True)
        report = self._progress.setdefault(claimed, SendReport())
        metas: list[FileMeta] = []
        skipped: list[str] = []
        columns: dict[str, object] = {}
        unpacker: ZipUnpacker | None = None
        extractor: threading.Thread | None = None
        ready: UnpackedMembers | None = None
        settings = self.settings()
        try:
            unpacker = ZipUnpacker(claimed, work)
            metas = unpacker.plan()
            skipped = unpacker.skipped
            if not metas:
                raise ZipRejected("the ZIP holds no DICOM files")
            ready = UnpackedMembers(unpacker)
            extractor = threading.Thread(target=_extract, args=(unpacker, ready), name="unzip", daemon=True)
            extractor.start()
            send_with_retries(settings.target, metas, report, retries=settings.retries,
                              retry_delay_seconds=settings.retry_delay_seconds,
                              parallel=settings.parallel_associations, wait=ready.take, pause=self.stop.wait,
                              retry_unreachable=False, convert_into=work / "converted")
            extractor.join()
            columns = study_columns([metas[0].path], [unpacker.modalities.get(m.path, "") for m in metas])
            if report.failed:
                raise ZipRejected(f"{len(report.failed)} of {len(metas)} images were not stored: "
                                  + images_and_reasons(report.failed, {m.path: m.name for m in metas})[:2000])
            committed = self._commit(claimed, settings, metas, report, ready) if settings.storage_commitment else ""
        except SendingInterrupted:
            return  # the claimed ZIP stays in .bridge/outbox and is sent after the restart
        except CommitmentNotConfirmed as err:
            self._progress.pop(claimed, None)  # sent again from the first image, then asked again
            self._outage_began(str(err), settings, WAITING_FOR_COMMITMENT)
            self._gave_up(claimed, settings, self.clock())
            return
        except TransientSendError as err:
            self._outage_began(str(err), settings)
            self._gave_up(claimed, settings, self.clock())
            return
        except OSError as err:
            if err.errno in DISK_FULL:
                self._wait_for_space(claimed, err)
                return
            self._fail_with_columns(claimed, str(err), skipped, metas, ready)
            return
        except (ZipRejected, ValueError) as err:
            self._fail_with_columns(claimed, str(err), skipped, metas, ready)
            return
        except Exception as err:  # noqa: BLE001 - whatever it is, it ends this ZIP, not the outbox
            log.exception("sending %s failed unexpectedly", shown(claimed.name))
            self._fail_with_columns(claimed, f"unexpected error while sending: {type(err).__name__}: {err}",
                                    skipped, metas, ready)
            return
        finally:
            if unpacker is not None:
                unpacker.cancelled.set()
                if extractor is not None:
                    extractor.join()
                unpacker.close()
            shutil.rmtree(work, ignore_errors=True)
        self._disk_full_logged = False
        self._outage_ended()
        self._progress.pop(claimed, None)
        _remove_claim(claimed)
        self._log(claimed, WARNING if report.warnings or skipped else SUCCESS, len(metas), columns,
                  f"{len(report.delivered)} images stored in the PACS{committed}"
                  + self._notes(skipped, report, unpacker.no_meta if unpacker is not None else []))

    # -- storage commitment (after every image of the ZIP is stored) ---------------------------
    def _commit(self, claimed: Path, settings: SendSettings, metas: list[FileMeta], report: SendReport,
                unpacked: UnpackedMembers) -> str:
        """The PACS commits what it stored: " and committed by the PACS", or raises.

        Instances reported failed (or not mentioned) are sent once more and asked for again;
        still failing -> ZipRejected naming them. No report in time -> CommitmentNotConfirmed.
        """
        by_path = {m.path: m for m in metas}
        stored = [by_path[path] for path in report.delivered if path in by_path]  # warnings count as stored
        self._committing = (claimed.name, self.clock())
        try:
            failed = self._ask_commitment(settings, stored)
            if failed:
                again = [m for m in stored if m.sop_instance in failed]
                log.warning("storage commitment failed for %d images of %s; sending them again", len(again),
                            shown(claimed.name))
                resent = send_with_retries(settings.target, again, SendReport(), retries=settings.retries,
                                           retry_delay_seconds=settings.retry_delay_seconds, pause=self.stop.wait,
                                           retry_unreachable=False, wait=unpacked.take)
                failed = {m.sop_instance: reason for m in again if (reason := resent.failed.get(m.path))}
                if not failed:
                    failed = self._ask_commitment(settings, again)
            if failed:
                names = {m.path: f"{m.name} ({m.sop_instance})" for m in stored}
                why = {m.path: failed[m.sop_instance] for m in stored if m.sop_instance in failed}
                raise ZipRejected(f"the PACS did not commit {len(why)} of {len(stored)} stored images, even after "
                                  "sending them again (storage commitment): " + images_and_reasons(why, names)[:2000])
        finally:
            self._committing = None
        return " and committed by the PACS"

    def _ask_commitment(self, settings: SendSettings, stored: list[FileMeta]) -> dict[str, str]:
        """N-ACTION for ``stored``, then wait for the report: the failed instances (UID -> reason)."""
        timeout = settings.commit_timeout_minutes * 60
        same_association = (REPORT_ON_SAME_ASSOCIATION_SECONDS if settings.reports_to_receiver
                            else min(timeout, settings.target.network_timeout_seconds))
        asked = self.clock()  # the time allowed counts from the request
        try:
            transaction = request_commitment(settings.target, [(m.sop_class, m.sop_instance) for m in stored],
                                             self.commitment, same_association, self.stop)
        except CommitmentError as err:
            if err.transient:
                raise PacsUnreachable(str(err)) from None
            raise ZipRejected(f"{err}; the images are stored in the PACS but not committed (turn "
                              "send.storage_commitment off for a PACS that cannot commit)") from None
        try:
            result = self._wait_for_report(transaction, asked, timeout)
        finally:
            self.commitment.close(transaction)
        if result is None:
            if self.stop.is_set():
                raise SendingInterrupted()
            where = ("on a new association to our receiver or on the same one" if settings.reports_to_receiver
                     else "on the same association (receiving is disabled, so it cannot report on a new one)")
            raise CommitmentNotConfirmed(
                f"the PACS accepted the storage commitment request for {len(stored)} images but sent no report "
                f"{where} within {settings.commit_timeout_minutes:g} minutes (send.commit_timeout_minutes); does "
                f"the PACS know our AE title {settings.target.calling_ae} with this host and the receive port?")
        requested = {m.sop_instance for m in stored}
        failed = {uid: why for uid, why in result.failed.items() if uid in requested}  # never what we did not ask
        failed.update({uid: "not mentioned in the PACS's commitment report" for uid in result.missing(requested)})
        return failed

    def _wait_for_report(self, transaction: str, asked: float, timeout_seconds: float) -> CommitmentResult | None:
        """The report, or None ``timeout_seconds`` after ``asked`` on the outbox's clock (or when stopping)."""
        while not self.stop.is_set():
            result = self.commitment.wait(transaction, COMMIT_POLL_SECONDS, self.stop)
            if result is not None:
                return result
            if self.clock() - asked >= timeout_seconds:
                return None
        return None

    def _fail_with_columns(self, claimed: Path, reason: str, skipped: list[str], metas: list[FileMeta],
                           ready: UnpackedMembers | None) -> None:
        columns = _first_file_columns(metas[0], ready) if metas and ready is not None else {}
        self._outage_ended()  # the PACS answered (or was not needed): a ZIP of its own failed
        self._fail(claimed, reason, skipped, len(metas), columns)

    def _wait_for_space(self, claimed: Path, err: OSError) -> None:
        """Disk full while unpacking: the ZIP keeps its place; one warning per episode."""
        if not self._disk_full_logged:
            self._disk_full_logged = True
            self.logbook.add(LogEntry(action=SEND, status=WARNING, needs_attention=True,
                                      target=shown(claimed.name),
                                      detail=f"cannot unpack {shown(claimed.name)}: the disk is full ({err.strerror}); "
                                             f"it waits in the outbox and is tried again every "
                                             f"{DISK_FULL_RETRY_SECONDS:.0f} s"))
        self.stop.wait(DISK_FULL_RETRY_SECONDS)

    def _fail(self, claimed: Path, reason: str, skipped: list[str], image_count: int,
              columns: dict[str, object]) -> None:
        """Move the ZIP, unchanged, to Outbox_Failed with ``<name>.reason.txt`` beside it.

        Its time stamp is set to now, so the janitor counts its age from the failure. If even
        the move fails, the ZIP stays claimed and is skipped until the next start, with a row.
        """
        self._progress.pop(claimed, None)
        target = self._failed_name(claimed.name)
        reason_file = target.with_name(target.name + REASON_SUFFIX)
        notes = "".join(f"skipped {entry}\n" for entry in skipped)
        try:
            reason_file.write_text(f"{shown(reason)}\n{notes}", encoding="utf-8")
        except OSError as err:
            reason_file.unlink(missing_ok=True)  # no empty reason file: the log book has it
            reason += f" (the reason file could not be written: {err.strerror or err})"
        try:
            os.replace(claimed, target)
            os.utime(target, follow_symlinks=False)
            fsync_path(self.layout.outbox_failed)
        except OSError as err:
            if not target.exists():
                self._skipped.add(claimed)
                reason_file.unlink(missing_ok=True)
                self._log(claimed, FAILED, image_count, columns,
                          f"{reason}; moving it to {self.layout.outbox_failed.name} failed too ({err}), so it "
                          f"stays in {claimed.parent} and is skipped until the bridge restarts", claimed)
                return
        _remove_claim(claimed)
        self._log(claimed, FAILED, image_count, columns, reason, target)

    def _failed_name(self, name: str) -> Path:
        """A free name in Outbox_Failed whose reason file's name still fits in 255 bytes."""
        name = _fitting_name(name)
        stem, suffix = os.path.splitext(name)
        target = self.layout.outbox_failed / name
        number = 1
        while target.exists() or target.is_symlink() or target.with_name(target.name + REASON_SUFFIX).exists():
            number += 1
            target = self.layout.outbox_failed / f"{stem}-{number}{suffix}"
        return target

    @staticmethod
    def _notes(skipped: list[str], report: SendReport, no_meta: list[str] | None = None) -> str:
        notes = []
        if report.warnings:
            notes.append(f"{len(report.warnings)} with warning status")
        if report.converted:
            notes.append(conversion_summary(report.converted))
        if no_meta:
            notes.append(f"{len(no_meta)} without file meta sent with file meta added ("
                         + ", ".join(no_meta[:5]) + (" …" if len(no_meta) > 5 else "") + ")")
        if skipped:
            notes.append("skipped: " + "; ".join(skipped[:10]))
        return f" ({'; '.join(notes)})" if notes else ""

    def _log(self, claimed: Path, status: str, image_count: int, columns: dict[str, Any], detail: str,
             target: Path | None = None) -> None:
        name = shown(claimed.name)
        where = shown(str(target)) if target is not None else name
        self.logbook.add(LogEntry(action=SEND, status=status, detail=shown(detail), image_count=image_count,
                                  target=where, **columns))
        self.bus.publish(OutboxZipDone(zip_name=name, target=where, status=status))


def _still(what: str) -> str:
    return "PACS still unreachable" if what == PACS_UNREACHABLE else f"still {what}"


def _fitting_name(name: str) -> str:
    """``name``, shortened if need be so that ``<name>-999.reason.txt`` fits in 255 bytes."""
    room = NAME_MAX_BYTES - len(REASON_SUFFIX) - len("-999")
    if len(os.fsencode(name)) <= room:
        return name
    stem, suffix = os.path.splitext(name)
    cut = os.fsencode(stem)[: room - len(os.fsencode(suffix))]
    for incomplete in range(4):  # do not leave half a UTF-8 character at the cut
        try:
            return cut[: len(cut) - incomplete].decode("utf-8") + suffix
        except UnicodeDecodeError:
            continue
    return os.fsdecode(cut) + suffix  # not UTF-8 to begin with: keep the bytes


def _claim_time(claimed: Path) -> float:
    """When the ZIP was first seen in Outbox_Auto (its claim folder's name says so)."""
    try:
        return int(claimed.parent.name.split("-", 1)[0]) / 1e9
    except ValueError:
        return time.time()


def _remove_claim(claimed: Path) -> None:
    claimed.unlink(missing_ok=True)
    shutil.rmtree(claimed.parent, ignore_errors=True)


def outbox_waiting(layout: StorageLayout) -> int:
    """ZIPs in Outbox_Auto plus the claimed ones (being sent, or waiting for the PACS)."""
    try:
        waiting = len(list(layout.outbox_auto.glob("*.zip")))
        return waiting + len(list(layout.outbox_work.glob("*/*.zip"))) + len(list(layout.outbox_work.glob("*.zip")))
    except OSError:
        return 0


def _extract(unpacker: ZipUnpacker, ready: UnpackedMembers) -> None:
    """Unpacking thread: hand over each member; any failure ends every wait with that error."""
    try:
        unpacker.extract_all(ready)
        ready.finish()
    except (ZipRejected, OSError) as err:
        ready.finish(err)
    except Exception as err:  # noqa: BLE001 - never a silent death: the sender fails the ZIP with it
        log.exception("unpacking failed")
        ready.finish(ZipRejected(f"unpacking failed: {type(err).__name__}: {err}"))


def _first_file_columns(first: FileMeta, ready: UnpackedMembers) -> dict[str, object]:
    """Study columns from the first file alone, once it is unpacked (or {} if it never is)."""
    try:
        ready.wait(first)
    except (ZipRejected, OSError):
        return {}
    return study_columns([first.path])


_SENT_ROW_OWN = ("image_count", "crid")  # a sent ZIP's row counts the images sent; it routes by no IDs


def study_columns(files: list[Path], modalities: list[str] | None = None) -> dict[str, Any]:
    """The log book's study columns for a ZIP being sent (first file + every file's modality).

    ``modalities``: every image's, when already known (images sent from memory have no file).
    """
    try:
        study = read_study_record(files[0])
    except Exception:  # noqa: BLE001 - the row is written without study columns
        return {}
    if modalities is None:
        modalities = []
        for path in files:
            scan = scan_header(path, {MODALITY})
            modalities.append(scan.text(MODALITY) if scan else "")
    columns = log_columns(replace(study, modalities=tuple(modalities)))
    return {name: value for name, value in columns.items() if name not in _SENT_ROW_OWN}
