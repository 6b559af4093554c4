"""The engine: one object that owns the workers of one storage folder.

Used as-is by the headless runner and by the terminal UI. It is started from validated
Settings and reports through the EventBus and the log book only.
"""

from __future__ import annotations

import logging
import shutil
import threading
from pathlib import Path

from .aggregator import Aggregator, PendingStudy
from .events import BridgeStatus, EventBus, StudyRouted
from .janitor import Janitor
from .layout import StorageLayout
from .outbox import Outbox
from .pacs import send_options
from .notifier import Notifier
from .open_error import RECENT_ROWS, open_error
from .pending_view import PendingDescriber
from .requeue import RequestWatcher
from .status_file import StatusFileWriter
from .ownership import FolderOwnership
from .permissions import restrict_storage, use_private_umask
from .logbook import FAILED, RECEIVE, SERVICE, SUCCESS, WARNING, INFO, LogBook, LogEntry
from .receiver import Receiver, ReceiverStartError, clear_incoming
from .settings import SETTINGS, Settings, receive_tls_context, unknown_keys
from .textlog import setup_text_log
from .tls import TlsSetupError
from .zipper import Zipper, ZippingAborted, is_transient, study_log_fields

log = logging.getLogger(__name__)

DISK_FULL_RETRY_SECONDS = 10.0


class Engine:
    """Receiver + aggregator + zipper over one storage folder."""

    def __init__(self, settings: Settings, *, log_to_stderr: bool = False, bind_address: str = "") -> None:
        self.settings = settings
        use_private_umask(settings.share_with_group)  # before anything is created
        self.layout = StorageLayout(settings.storage_folder)
        self.layout.ensure()
        self.ownership = FolderOwnership(self.layout.work)
        self.ownership.acquire()  # raises FolderOwnedElsewhere before touching anything
        self.bus = EventBus()
        self._log_handler = setup_text_log(self.layout.text_log, to_stderr=log_to_stderr)
        self.logbook = LogBook(self.layout.logbook_db, self.bus)
        self._permission_warning = restrict_storage(self.layout, settings.share_with_group)
        self.stopping = threading.Event()
        self.notifier = Notifier(self.layout, self.logbook, self.bus, lambda: self.settings, self.stopping)
        self.bus.subscribe(self.notifier.consider)
        self.aggregator = Aggregator(self.layout.spool, settings.receive_timeout_seconds)
        self.zipper = Zipper(self.layout, settings.crid_tag, self.stopping)
        self.pending_view = PendingDescriber(lambda: self.settings.crid_tag)
        self.bus.subscribe(self.pending_view.consider)
        self.receiver: Receiver | None = None
        self.receiver_error = ""
        self.outbox: Outbox | None = None
        self._bind_address = bind_address
        self._zip_thread = threading.Thread(target=self._zip_loop, name="zipper", daemon=True)

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        """Recover what an earlier run left, start the workers, then open the listener.

        Raises ReceiverStartError when the port cannot be opened; the other workers keep
        running (the UI shows the reason; the headless runner exits).
        """
        self._recover()
        self.notifier.start()
        self._zip_thread.start()
        Janitor(self.layout, self.logbook, lambda: self.settings.keep_failed_days, self.stopping).start()
        self._start_outbox()
        RequestWatcher(self.layout, self.logbook, self.aggregator, self.stopping).start()
        try:
            self._start_receiver()
        finally:
            self.logbook.add(LogEntry(action=SERVICE, status=INFO, detail=self._start_detail()))
            if self._permission_warning:
                self.logbook.add(LogEntry(action=SERVICE, status=WARNING, detail=self._permission_warning))
            for warning in unknown_keys(self.settings.source):
                self.logbook.add(LogEntry(action=SERVICE, status=WARNING, detail=warning))
            StatusFileWriter(self.layout, self.status, self.stopping).start()

    def _start_receiver(self) -> None:
        self.receiver_error = ""
        if not self.settings.receive_enabled:
            return
        try:
            receiver = Receiver(
                layout=self.layout, aggregator=self.aggregator, logbook=self.logbook, bus=self.bus,
                settings=lambda: self.settings, bind_address=self._bind_address,
                ssl_context=receive_tls_context(self.settings),  # files may have changed since the settings' check
            )
            receiver.start()
        except (ReceiverStartError, TlsSetupError) as err:
            self.receiver_error = str(err) if isinstance(err, ReceiverStartError) else f"cannot start the receiver: {err}"
            self.logbook.add(LogEntry(action=SERVICE, status=FAILED, detail=self.receiver_error))
            raise ReceiverStartError(self.receiver_error) from None
        self.receiver = receiver

    def _start_outbox(self) -> None:
        if self.settings.send_enabled and self.settings.send_host and self.outbox is None:
            self.outbox = Outbox(self.layout, self.logbook, self.bus, lambda: send_options(self.settings),
                                 self.stopping)
            self.outbox.start()

    def apply_settings(self, new: Settings) -> str:
        """Put saved settings in force without a restart; returns what could not be applied."""
        old, self.settings = self.settings, new
        self.aggregator.timeout_seconds = new.receive_timeout_seconds
        self.aggregator.wake()
        self.zipper.crid_tag = new.crid_tag
        if any(getattr(old, spec.field) != getattr(new, spec.field) for spec in SETTINGS if spec.restarts_receiver) \
                or self.receiver_error:
            if self.receiver is not None:
                self.receiver.stop(grace_seconds=5)
                self.receiver = None
            try:
                self._start_receiver()
            except ReceiverStartError:
                pass  # logged, and shown by status()
        self._start_outbox()
        self.logbook.add(LogEntry(action=SERVICE, status=INFO, detail="settings applied: " + self._start_detail()))
        if new.storage_folder != old.storage_folder:
            return "the storage folder changes when the bridge is restarted"
        if new.share_with_group != old.share_with_group:
            return "file permissions change when the bridge is restarted"
        if self.outbox is not None and not (new.send_enabled and new.send_host):
            return "sending stops when the bridge is restarted"
        return ""

    def stop(self, grace_seconds: float = 10.0) -> None:
        """No new associations; running ones get ``grace_seconds``; nothing half-written is left."""
        if self.receiver is not None:
            self.receiver.stop(grace_seconds)
        self.stopping.set()
        self.aggregator.wake()
        if self._zip_thread.is_alive():
            self._zip_thread.join(timeout=grace_seconds + 30)
        if self.outbox is not None:
            self.outbox.join(timeout=grace_seconds + 60)
        self.notifier.wake()
        self.notifier.join(timeout=30)  # one last delivery; undelivered mails wait in .bridge/mail
        self.logbook.add(LogEntry(action=SERVICE, status=INFO, detail="bridge stopped"))
        self.logbook.close()
        logging.getLogger("bridge").removeHandler(self._log_handler)
        self._log_handler.close()
        self.ownership.release()

    def _start_detail(self) -> str:
        s = self.settings
        receiving = (f"receiving on port {s.receive_port} as {s.receive_ae_title}"
                     f"{' over TLS' if s.receive_tls_cert else ''}" if self.receiver is not None
                     else "receiving is disabled")
        sending = (f"sending Outbox_Auto to {s.send_ae_title_receiver}@{s.send_host}:{s.send_port}"
                   f"{' over TLS' if s.send_tls else ''}" if self.outbox is not None else "sending is disabled")
        return f"bridge started; {receiving}; {sending}; storage {self.layout.root}"

    def _recover(self) -> None:
        clear_incoming(self.layout)
        for leftover in self.layout.staging.iterdir():  # half-written ZIPs of a crash
            leftover.unlink() if leftover.is_file() else shutil.rmtree(leftover, ignore_errors=True)
        recovered = self.aggregator.recover()
        if recovered:
            images = sum(s.image_count for s in recovered)
            self.logbook.add(LogEntry(action=RECEIVE, status=INFO,
                                      detail=f"resumed {len(recovered)} pending studies ({images} images) "
                                             f"from an earlier run; zipping after the timeout"))

    # -- zipping ------------------------------------------------------------------------------
    def _zip_loop(self) -> None:
        while not self.stopping.is_set():
            for study in self.aggregator.claim_due():
                if self.stopping.is_set():
                    break
                self.route_study(study)
            self.aggregator.wait_for_work(self.stopping)

    def route_study(self, study: PendingStudy) -> None:
        """Zip one claimed study into an inbox, or keep it visibly in Inbox_Failed."""
        try:
            outcome = self.zipper.zip_study(study)
        except ZippingAborted:
            return  # stays in the spool; zipped after the restart
        except Exception as err:  # noqa: BLE001 - every failure is logged and the data kept
            self._handle_zip_failure(study, err)
            return
        shutil.rmtree(study.folder, ignore_errors=True)
        summary = outcome.summary
        status = WARNING if summary.warnings else SUCCESS
        where = outcome.target.parent.name
        detail = f"{summary.image_count} images zipped into {where}"
        if not summary.crids:
            detail += " (no recipient IDs: forward manually)"
        if summary.warnings:
            detail += "; " + "; ".join(summary.warnings)
        self.logbook.add(LogEntry(action=RECEIVE, status=status, detail=detail, target=str(outcome.target),
                                  **study_log_fields(summary)))
        self.bus.publish(StudyRouted(study_key=study.key, target=str(outcome.target), status=status))

    def _handle_zip_failure(self, study: PendingStudy, err: Exception) -> None:
        if is_transient(err):
            self.aggregator.retry_later(study, DISK_FULL_RETRY_SECONDS)
            log.warning("zipping %s: disk full (try %d): %s", study.key, study.attempts, err)
            if study.attempts == 1:
                self.logbook.add(LogEntry(action=RECEIVE, status=WARNING, image_count=study.image_count,
                                          detail=f"cannot zip study {study.key}: disk full ({err}); "
                                                 f"the images stay in the spool and zipping is retried"))
            return
        reason = f"zipping study {study.key} failed: {err}"
        log.exception("zipping %s failed", study.key)
        try:
            target = self.zipper.move_to_failed(study, reason)
        except OSError as move_err:
            self.aggregator.retry_later(study, DISK_FULL_RETRY_SECONDS)
            reason += f"; moving it to {self.layout.inbox_failed.name} failed too ({move_err}), kept in the spool"
            target = study.folder
        self.logbook.add(LogEntry(action=RECEIVE, status=FAILED, detail=reason, image_count=study.image_count,
                                  target=str(target)))
        self.bus.publish(StudyRouted(study_key=study.key, target=str(target), status=FAILED))

    @property
    def storage(self) -> Path:
        return self.layout.root

    def status(self) -> BridgeStatus:
        """A snapshot for status displays and the status file (memory, two folder listings, new headers)."""
        pending = self.pending_view.describe(self.aggregator.pending(), self.aggregator.timeout_seconds,
                                             self.aggregator.clock())
        receiver = self.receiver  # while settings are applied, the old listener may still hold the old port
        return BridgeStatus(
            listening=receiver is not None and receiver.listening,
            port=receiver.port if receiver is not None else self.settings.receive_port,
            receiver_error=self.receiver_error if self.settings.receive_enabled else "receiving is disabled",
            pending=pending, outbox_waiting=outbox_waiting(self.layout), owner_pid=None,
            last_error=open_error(self.logbook.newest(RECENT_ROWS)),
        )


def outbox_waiting(layout: StorageLayout) -> int:
    """ZIPs in Outbox_Auto plus the one being sent."""
    return len(list(layout.outbox_auto.glob("*.zip"))) + len(list(layout.outbox_work.glob("*.zip")))
