"""The engine: one object that owns the workers of one storage folder.

Used as-is by the headless runner and by the terminal UI. It is started from validated
Settings and reports through the EventBus and the log book only.
"""

from __future__ import annotations

import logging
import shutil
import threading
from pathlib import Path

from .aggregator import Aggregator
from .commitment import CommitmentLedger
from .events import BridgeStatus, EventBus
from .janitor import Janitor
from .layout import StorageLayout
from .liveness import Liveness
from .logbook import FAILED, INFO, RECEIVE, SERVICE, WARNING, LogBook, LogEntry
from .notifier import Notifier
from .open_error import RECENT_ROWS, open_error
from .outbox import Outbox, outbox_waiting
from .ownership import FolderOwnership
from .pacs import send_options
from .pending_view import PendingDescriber
from .permissions import restrict_storage, use_private_umask
from .receiver import Receiver, ReceiverStartError, file_incoming
from .requeue import RequestWatcher
from .runtime import configure_process, forget_temp_folder
from .settings import SETTINGS, Settings, receive_tls_context, unknown_keys
from .status_file import StatusFileWriter
from .supervisor import Supervisor, log_uncaught_thread_exceptions
from .textlog import setup_text_log
from .tls import TlsSetupError, certificate_warnings
from .zip_worker import ZipWorker
from .zipper import Zipper

log = logging.getLogger(__name__)

class Engine:
    """Receiver + aggregator + zipper over one storage folder."""

    def __init__(self, settings: Settings, *, log_to_stderr: bool = False, bind_address: str = "") -> None:
        self.settings = settings
        use_private_umask(settings.share_with_group)  # before anything is created
        self.layout = StorageLayout(settings.storage_folder)
        self.layout.ensure()
        configure_process(temp_folder=self.layout.incoming)
        self.ownership = FolderOwnership(self.layout.work)
        self.ownership.acquire()  # raises FolderOwnedElsewhere before touching anything
        self.bus = EventBus()
        self._log_handler = setup_text_log(self.layout.text_log, to_stderr=log_to_stderr)
        self.logbook = LogBook(self.layout.logbook_db, self.bus)
        self._permission_warning = restrict_storage(self.layout, settings.share_with_group)
        self.stopping = threading.Event()
        log_uncaught_thread_exceptions()
        self.supervisor = Supervisor(self.logbook, self.stopping)
        self.notifier = Notifier(self.layout, self.logbook, self.bus, lambda: self.settings, self.stopping,
                                 thread_factory=self.supervisor.thread)
        self.bus.subscribe(self.notifier.consider)
        self.aggregator = Aggregator(self.layout.spool, lambda: self.settings.receive_timeout_seconds)
        self.liveness = Liveness()
        self.zipper = Zipper(self.layout, lambda: self.settings.crid_tag, self.stopping,
                             progress=lambda: self.liveness.tick("zipper"))
        self.pending_view = PendingDescriber(lambda: self.settings.crid_tag)
        self.bus.subscribe(self.pending_view.consider)
        self.receiver: Receiver | None = None
        self.receiver_error = ""
        self.outbox: Outbox | None = None
        self.commitment = CommitmentLedger()  # the outbox waits here; the receiver hands in the PACS's reports
        self._bind_address = bind_address
        self.zip_worker = ZipWorker(self.layout, self.aggregator, self.zipper, self.logbook, self.bus, self.stopping,
                                    heartbeat=lambda: self.liveness.tick("zipper"),
                                    thread_factory=self.supervisor.thread)

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        """Recover what an earlier run left, start the workers, then open the listener.

        Raises ReceiverStartError when the port cannot be opened; the other workers keep
        running (the UI shows the reason; the headless runner exits).
        """
        self._recover()
        self.notifier.start()
        self.zip_worker.start()
        Janitor(self.layout, self.logbook, lambda: self.settings.keep_failed_days, self.stopping,
                thread_factory=self.supervisor.thread).start()
        self._start_outbox()
        RequestWatcher(self.layout, self.logbook, self.aggregator, self.stopping).start()
        try:
            self._start_receiver()
        finally:
            self.logbook.add(LogEntry(action=SERVICE, status=INFO, detail=self._start_detail()))
            if self._permission_warning:
                self.logbook.add(LogEntry(action=SERVICE, status=WARNING, detail=self._permission_warning))
            for warning in certificate_warnings({"receive.tls_cert": self.settings.receive_tls_cert,
                                                 "send.tls_cert": self.settings.send_tls_cert}):
                self.logbook.add(LogEntry(action=SERVICE, status=WARNING, needs_attention=True, detail=warning))
            if self.settings.send_storage_commitment and not self.settings.receive_enabled:
                self.logbook.add(LogEntry(action=SERVICE, status=WARNING, detail=(
                    "send.storage_commitment is on but receiving is disabled: the PACS can confirm only on the "
                    "association the bridge asks on, not on one of its own (most PACS use their own)")))
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
                heartbeat=lambda: self.liveness.tick("receiver"), commitment=self.commitment,
            )
            receiver.start()
        except (ReceiverStartError, TlsSetupError) as err:
            self.receiver_error = (str(err) if isinstance(err, ReceiverStartError)
                                   else f"cannot start the receiver: {err}")
            self.logbook.add(LogEntry(action=SERVICE, status=FAILED, detail=self.receiver_error))
            raise ReceiverStartError(self.receiver_error) from None
        self.liveness.tick("receiver")  # a re-opened listener starts with a fresh heartbeat
        self.receiver = receiver

    def _start_outbox(self) -> None:
        if self.settings.send_enabled and self.settings.send_host and self.outbox is None:
            self.outbox = Outbox(self.layout, self.logbook, self.bus, lambda: send_options(self.settings),
                                 self.stopping, thread_factory=self.supervisor.thread, commitment=self.commitment)
            self.outbox.start()

    def apply_settings(self, new: Settings) -> str:
        """Put saved settings in force without a restart; returns what could not be applied.

        Every worker reads ``self.settings`` when it decides, so swapping it is all it takes; only
        the listener is rebuilt, when a setting it was opened with changed.
        """
        old, self.settings = self.settings, new
        self.aggregator.wake()  # a shorter quiet time may make a study due now
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
        self.zip_worker.join(timeout=grace_seconds + 30)
        if self.outbox is not None:
            self.outbox.join(timeout=grace_seconds + 60)
        self.notifier.wake()
        self.notifier.join(timeout=30)  # one last delivery; undelivered mails wait in .bridge/mail
        self.logbook.add(LogEntry(action=SERVICE, status=INFO, detail="bridge stopped"))
        self.logbook.close()
        logging.getLogger("bridge").removeHandler(self._log_handler)
        self._log_handler.close()
        forget_temp_folder(self.layout.incoming)
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
        for leftover in self.layout.staging.iterdir():  # half-written ZIPs of a crash
            leftover.unlink() if leftover.is_file() else shutil.rmtree(leftover, ignore_errors=True)
        recovered = self.aggregator.recover()
        incoming = file_incoming(self.layout, self.aggregator)  # after recover(): into the adopted folders
        if recovered or incoming.filed:
            pending = self.aggregator.pending()
            images = sum(s.image_count for s in pending)
            filed = f", {incoming.filed} of them not yet filed when it stopped" if incoming.filed else ""
            self.logbook.add(LogEntry(action=RECEIVE, status=INFO,
                                      detail=f"resumed {len(pending)} pending studies ({images} images{filed}) "
                                             f"from an earlier run; zipping after the timeout"))
        if incoming.kept:
            reasons = "; ".join(sorted(set(incoming.kept.values())))
            self.logbook.add(LogEntry(action=RECEIVE, status=WARNING, needs_attention=True,
                                      target=str(self.layout.incoming),
                                      detail=f"{len(incoming.kept)} files received before the stop could be neither "
                                             f"filed nor removed ({reasons}); they stay in {self.layout.incoming} "
                                             f"and are tried again at the next start"))

    def stuck_workers(self, max_age_seconds: float) -> list[str]:
        """Workers that died or did not tick for ``max_age_seconds`` (the service watchdog asks)."""
        if self.stopping.is_set():
            return []
        loops = ["zipper", *(["receiver"] if self.receiver is not None else [])]
        stuck = self.liveness.stuck(loops, max_age_seconds)
        for name, thread_alive in (("zipper", self.zip_worker.alive),
                                   ("outbox", self.outbox is None or self.outbox.alive)):
            if not thread_alive:
                stuck.append(f"{name} (thread ended)")
        return stuck

    @property
    def storage(self) -> Path:
        return self.layout.root

    def status(self) -> BridgeStatus:
        """A snapshot for status displays and the status file (memory, two folder listings, new headers)."""
        pending = self.pending_view.describe(self.aggregator.pending(), self.aggregator.quiet_seconds(),
                                             self.aggregator.clock())
        receiver = self.receiver  # while settings are applied, the old listener may still hold the old port
        return BridgeStatus(
            listening=receiver is not None and receiver.listening,
            port=receiver.port if receiver is not None else self.settings.receive_port,
            receiver_error=self.receiver_error if self.settings.receive_enabled else "receiving is disabled",
            pending=pending, outbox_waiting=outbox_waiting(self.layout), owner_pid=None,
            outbox_note=self.outbox.status_text() if self.outbox is not None else "",
            worker_notes=tuple(f"{t.name} {'restarting' if t.restarting else 'restarted'} {t.restarts}× "
                               f"({t.last_error})" for t in self.supervisor.troubles()),
            last_error=open_error(self.logbook.newest(RECENT_ROWS)),
        )

