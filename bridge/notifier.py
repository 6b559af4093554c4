"""E-mail notifications: which log-book rows need a person, gathered, queued on disk, retried.

The notifier listens to the event bus (every log-book row passes by) and never blocks the
worker that wrote the row: it only puts the row in a queue. Its own thread gathers rows for
``notify.gather_seconds``, turns them into mails (more than ``BURST_LIMIT`` of a kind become
one summary), writes each mail to ``.bridge/mail/`` and then hands the queue to the mail
server. A server that is down is logged once and retried every ``retry_seconds``; mails
survive a restart, and a backlog is delivered as one digest rather than a flood.
"""

from __future__ import annotations

import email
import email.policy
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path

from .events import EventBus, LogBookEntryAdded, MailQueued
from .layout import StorageLayout
from .logbook import FAILED, INFO, RECEIVE, SERVICE, SUCCESS, WARNING, LogBook, LogEntry
from .mail import MailError, new_message, send_mail
from .mail_text import ARRIVAL, FAILURE, Notice, compose_digest, compose_single, compose_summary
from .settings import Settings
from .supervisor import ThreadFactory, plain_thread

log = logging.getLogger(__name__)

BURST_LIMIT = 3  # more events of one kind in one gathering window become one summary mail
RETRY_SECONDS = 60.0


def notice_for(entry: LogEntry, settings: Settings) -> Notice | None:
    """The mail a log-book row deserves under these settings, or None."""
    if not settings.notify_enabled:
        return None
    if settings.notify_on_failure and (entry.status == FAILED or entry.needs_attention):
        return Notice(FAILURE, entry)
    if (settings.notify_on_arrival and entry.action == RECEIVE and entry.status in (SUCCESS, WARNING)
            and entry.target.endswith(".zip")):
        return Notice(ARRIVAL, entry)
    return None


class Notifier:
    """Owns the mail queue folder and the thread that delivers it."""

    def __init__(self, layout: StorageLayout, logbook: LogBook, bus: EventBus, settings: Callable[[], Settings],
                 stop: threading.Event,
                 thread_factory: ThreadFactory = plain_thread) -> None:
        self.layout = layout
        self.bus = bus
        self.logbook = logbook
        self.settings = settings
        self.stop = stop
        self.retry_seconds = RETRY_SECONDS
        self._notices: queue.Queue[Notice | None] = queue.Queue()  # None only wakes the thread
        self._server_down = False  # the last delivery failed: wait retry_seconds (or a new event)
        self._server_down_logged = False  # the outage is in the log book (once per outage)
        self._backlog = False  # queued mails are left from an outage or an earlier run: send as one digest
        self._thread = thread_factory("notifier", self._run)

    # -- called on any worker's thread --------------------------------------------------------
    def consider(self, event: object) -> None:
        """Event-bus subscriber: queue rows that deserve a mail (cheap, never raises)."""
        if isinstance(event, LogBookEntryAdded) and event.entry is not None:
            notice = notice_for(event.entry, self.settings())
            if notice is not None:
                self._notices.put(notice)

    # -- the notifier thread ------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def join(self, timeout: float) -> None:
        if self._thread.is_alive():  # an engine stopped before it started has no thread to wait for
            self._thread.join(timeout)

    def wake(self) -> None:
        """Make the thread look at ``stop`` now (the engine is stopping)."""
        self._notices.put(None)

    def _run(self) -> None:
        self._backlog = bool(self.queued())  # left by an earlier run
        while not self.stop.is_set():
            waiting = self.queued()
            if waiting and not self._server_down:
                self._deliver(waiting)
            try:
                first = self._notices.get(timeout=self.retry_seconds if self._server_down else 1.0)
            except queue.Empty:
                self._server_down = False  # time to try the queue again
                continue
            if first is not None:
                self.stop.wait(self.settings().notify_gather_seconds)  # let a burst gather
            self._write(self._gathered(first))
            self._server_down = False  # something new: worth a try at once
        self._write(self._gathered(None))
        if not self._server_down and self.queued():
            self._deliver(self.queued())  # one last try; what fails waits on disk for the next start

    def _gathered(self, first: Notice | None) -> list[Notice]:
        notices = [first] if first is not None else []
        while True:
            try:
                notice = self._notices.get_nowait()
            except queue.Empty:
                return notices
            if notice is not None:
                notices.append(notice)

    def _write(self, notices: list[Notice]) -> None:
        """Compose mails for the gathered notices and keep them in the queue folder."""
        settings = self.settings()
        for kind in (FAILURE, ARRIVAL):
            of_kind = [n for n in notices if n.kind == kind]
            if len(of_kind) > BURST_LIMIT:
                mails = [compose_summary(of_kind, settings.notify_no_phi, self.layout.root)]
            else:
                mails = [compose_single(n, settings.notify_no_phi, self.layout.root) for n in of_kind]
            for subject, body in mails:
                self._enqueue(new_message(settings, subject, body).as_bytes())
        if notices:
            self.bus.publish(MailQueued(waiting=len(self.queued())))

    def _enqueue(self, data: bytes) -> Path | None:
        """Write one mail into the queue folder; its path, or None when the disk refused it."""
        target = self.layout.mail_queue / f"{time.time_ns()}.eml"
        temp = target.with_name(f".{target.name}.tmp")
        try:
            temp.write_bytes(data)
            os.replace(temp, target)
        except OSError as err:  # disk full: the log book row is the record
            log.error("cannot queue a notification mail: %s", err)
            return None
        return target

    def queued(self) -> list[Path]:
        return sorted(self.layout.mail_queue.glob("*.eml"))

    def _deliver(self, waiting: list[Path]) -> None:
        """Send the queue, oldest first; a backlog goes as one digest; stop at the first failure."""
        settings = self.settings()
        if not settings.notify_enabled:
            return
        if len(waiting) > BURST_LIMIT and self._backlog:
            waiting = self._digest(waiting, settings)
        for path in waiting:
            message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
            try:
                send_mail(settings, message)  # type: ignore[arg-type]
            except MailError as err:
                self._went_down(str(err), len(self.queued()))
                return
            path.unlink()
        self._backlog = False
        if self._server_down_logged:
            self._server_down_logged = False
            self.logbook.add(LogEntry(action=SERVICE, status=INFO, detail="notification mails are delivered again"))

    def _digest(self, waiting: list[Path], settings: Settings) -> list[Path]:
        """Merge queued mails into one (written before the parts are removed: nothing is lost).

        Returns what to send: the digest, or the parts themselves if it could not be written.
        """
        parts = []
        for path in waiting:
            message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
            body = message.get_body(("plain",))
            parts.append((str(message["Subject"]), body.get_content() if body is not None else ""))
        subject, text = compose_digest(parts)
        digest = self._enqueue(new_message(settings, subject, text).as_bytes())
        if digest is None:
            return waiting
        for path in waiting:
            path.unlink(missing_ok=True)
        return [digest]

    def _went_down(self, reason: str, waiting: int) -> None:
        self._server_down = self._backlog = True
        log.warning("notification mail not sent: %s", reason)
        if not self._server_down_logged:
            self._server_down_logged = True
            self.logbook.add(LogEntry(action=SERVICE, status=WARNING,
                                      detail=f"notification mail not sent: {reason}; {waiting} mail(s) wait in "
                                             f"{self.layout.mail_queue} and are retried every "
                                             f"{self.retry_seconds:.0f} s"))


def send_test_mail(settings: Settings) -> str:
    """Mail the recipients now (the Settings screen and ``dicombridge test-mail``); raises MailError."""
    if not settings.notify_smtp_host or not settings.notify_recipients:
        raise MailError("set notify.smtp_host and notify.recipients first")
    message = new_message(settings, "[DicomBridge] test mail",
                          "This is a test of DicomBridge's notification settings. Failures will be mailed "
                          "like this one.\n")
    send_mail(settings, message)
    return f"test mail sent to {', '.join(settings.notify_recipients)} via {settings.notify_smtp_host}"
