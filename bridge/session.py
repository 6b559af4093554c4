"""What the terminal UI holds: a running bridge it hosts, or one it attaches to.

Only one bridge may own a storage folder. The UI started while a headless service owns it
attaches instead: it reads that service's log book (SQLite, shared safely between processes)
and status file, and edits its settings file, which the service applies by itself. Both kinds
of session offer the same narrow interface, so the UI never knows which one it has — and the
UI reaches the engine through this module (and ``bridge.events``) only.

Changes are pushed, not polled by the UI: each session's watcher thread publishes new log-book
rows (``LogBookEntryAdded`` with the row) and a changed status (``StatusChanged``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

from .config_watch import POLL_SECONDS, file_stamp, watch_config
from .engine import Engine
from .events import BridgeStatus, ConfigFileChanged, EventBus, LogBookEntryAdded, StatusChanged, Subscriber
from .headless import EXIT_START_FAILED
from .layout import FOLDER_GUIDE, StorageError, StorageLayout
from .logbook import FAILED, INFO, RECEIVE, SEND, SERVICE, SUCCESS, WARNING, LogBook, LogEntry
from .outbox import outbox_waiting
from .ownership import FolderOwnedElsewhere, FolderOwnership
from .receiver import ReceiverStartError
from .requeue import RequeueError, reason_text, request_zip_again, send_again, who, zip_again
from .settings import Settings
from .status_file import process_alive, read_status, status_path
from .study_record import STUDY_COLUMNS

__all__ = [
    "EXIT_START_FAILED",
    "FAILED",
    "StorageError",
    "FOLDER_GUIDE",
    "INFO",
    "RECEIVE",
    "SEND",
    "SERVICE",
    "SUCCESS",
    "WARNING",
    "LogEntry",
    "STUDY_COLUMNS",
    "Outcome",
    "Session",
    "can_send_again",
    "can_zip_again",
    "open_session",
]

WATCH_SECONDS = 0.5  # status (and, attached, new log-book rows) looked at this often
STALE_STATUS_SECONDS = 5.0  # a status file not rewritten for this long: its writer is gone
ECHO_TIMEOUT_SECONDS = 10


@dataclass(frozen=True)
class Outcome:
    """What an action on the session did, in words for the UI."""

    ok: bool
    text: str


class Session(Protocol):
    config_path: Path
    attached: bool
    label: str  # what the title bar says the UI is connected to
    storage: Path

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]: ...
    def newest(self, limit: int = 500) -> list[LogEntry]: ...
    def status(self) -> BridgeStatus: ...
    def apply(self, settings: Settings) -> str: ...
    def echo(self, settings: Settings) -> Outcome: ...
    def test_mail(self, settings: Settings) -> Outcome: ...
    def again(self, entry: LogEntry) -> Outcome: ...
    def reason(self, entry: LogEntry) -> str: ...
    def close(self) -> None: ...


def can_send_again(entry: LogEntry) -> bool:
    return entry.action == SEND and entry.status == FAILED and entry.target.endswith(".zip")


def can_zip_again(entry: LogEntry) -> bool:
    return entry.action == RECEIVE and entry.status == FAILED and bool(entry.target) and Path(entry.target).is_dir()


def echo(settings: Settings) -> Outcome:
    """C-ECHO to the PACS in ``settings`` (blocks up to ECHO_TIMEOUT_SECONDS: call it on a worker)."""
    from .pacs import pacs_target
    from .sender import echo as send_echo
    from .settings import SettingsError

    try:
        target = pacs_target(settings, network_timeout_seconds=ECHO_TIMEOUT_SECONDS)
    except SettingsError as err:
        return Outcome(False, f"Cannot echo: {err}")
    if not target.host:
        return Outcome(False, "Cannot echo: send.host is empty")
    result = send_echo(target)
    return Outcome(True, f"{result.message} in {result.round_trip_ms:.0f} ms") if result.ok \
        else Outcome(False, result.message)


def test_mail(settings: Settings) -> Outcome:
    from .mail import MailError
    from .notifier import send_test_mail

    try:
        return Outcome(True, send_test_mail(settings))
    except MailError as err:
        return Outcome(False, f"Test mail not sent: {err}")


def _again(layout: StorageLayout, logbook: LogBook, entry: LogEntry,
           zip_study_again: Callable[[Path], str]) -> Outcome:
    """Send again (failed send row) or zip again (failed receive row with a folder)."""
    try:
        if can_send_again(entry):
            target = send_again(layout, logbook, Path(entry.target), who())
            return Outcome(True, f"{target.name} is back in Outbox_Auto and will be sent again")
        if can_zip_again(entry):
            return Outcome(True, zip_study_again(Path(entry.target)))
    except (RequeueError, OSError) as err:
        return Outcome(False, f"Not taken again: {err}")
    return Outcome(False, "Only a failed send (ZIP in Outbox_Failed) or a failed receive (folder in "
                          "Inbox_Failed) can be taken again")


class _Watcher:
    """A thread calling ``tick`` every WATCH_SECONDS until stopped."""

    def __init__(self, tick: Callable[[], None], name: str) -> None:
        self.stop = threading.Event()
        self._tick = tick
        threading.Thread(target=self._run, name=name, daemon=True).start()

    def _run(self) -> None:
        while not self.stop.wait(WATCH_SECONDS):
            self._tick()


class HostedSession:
    """The UI runs the workers itself (no service owns the folder)."""

    attached = False

    def __init__(self, engine: Engine, config_path: Path) -> None:
        self.engine = engine
        self.config_path = config_path
        self.storage = engine.layout.root
        self.label = str(config_path)
        self._last_status: BridgeStatus | None = None
        self._watcher = _Watcher(self._publish_status, "status-watch")
        self._config_watch = watch_config(config_path, engine, self._watcher.stop)  # hand edits apply here too

    def _publish_status(self) -> None:
        status = self.engine.status()
        if status != self._last_status:
            self._last_status = status
            self.engine.bus.publish(StatusChanged(status))

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        return self.engine.bus.subscribe(subscriber)

    def newest(self, limit: int = 500) -> list[LogEntry]:
        return self.engine.logbook.newest(limit)

    def status(self) -> BridgeStatus:
        return self.engine.status()

    def apply(self, settings: Settings) -> str:
        return self.engine.apply_settings(settings)

    def echo(self, settings: Settings) -> Outcome:
        return echo(settings)

    def test_mail(self, settings: Settings) -> Outcome:
        return test_mail(settings)

    def again(self, entry: LogEntry) -> Outcome:
        def zip_now(folder: Path) -> str:
            study = zip_again(self.engine.layout, self.engine.logbook, self.engine.aggregator, folder, who())
            self.engine.aggregator.wake()
            return f"{study.image_count} images are pending again and will be zipped"

        return _again(self.engine.layout, self.engine.logbook, entry, zip_now)

    def reason(self, entry: LogEntry) -> str:
        return reason_text(Path(entry.target)) if entry.target else ""

    def close(self) -> None:
        self._watcher.stop.set()
        self._config_watch.join(timeout=30)  # a hand edit being applied finishes before the engine stops
        self.engine.stop(grace_seconds=5)


class AttachedSession:
    """A headless service owns the folder: show its log book and status live, leave its workers alone."""

    attached = True

    def __init__(self, settings: Settings, config_path: Path, owner_pid: int | None) -> None:
        self.config_path = config_path
        self.layout = StorageLayout(settings.storage_folder)
        self.storage = self.layout.root
        self.settings = settings
        self.owner_pid = owner_pid
        self.label = f"attached to the service · {config_path}"
        self.bus = EventBus()
        self.logbook = LogBook(self.layout.logbook_db)
        self._ownership = FolderOwnership(self.layout.work)
        self._seen = self.logbook.latest_id()
        self._last_status: BridgeStatus | None = None
        self._watcher = _Watcher(self._look, "service-watch")
        threading.Thread(target=self._watch_config, name="config-watch", daemon=True).start()

    def _look(self) -> None:
        """Another process writes the log book and the status file; announce what changed."""
        for entry in reversed(self.logbook.newest_after(self._seen)):
            self._seen = max(self._seen, entry.entry_id or 0)
            self.bus.publish(LogBookEntryAdded(entry.entry_id or 0, entry.action, entry.status, entry))
        status = self.status()
        if status != self._last_status:
            self._last_status = status
            self.bus.publish(StatusChanged(status))

    def _watch_config(self) -> None:
        """The service applies its config file itself; the attached form only needs to know it changed.
        Polled by its time stamp, size and inode, as the service's own watcher does (no folder watch:
        an odd file name elsewhere in the folder cannot stop it)."""
        seen = file_stamp(self.config_path)
        while not self._watcher.stop.wait(POLL_SECONDS):
            stamp = file_stamp(self.config_path)
            if stamp != seen:
                seen = stamp
                self.bus.publish(ConfigFileChanged())

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        return self.bus.subscribe(subscriber)

    def newest(self, limit: int = 500) -> list[LogEntry]:
        return self.logbook.newest(limit)

    def status(self) -> BridgeStatus:
        """The service's own status from its status file, or why there is none."""
        path = status_path(self.layout)
        found = read_status(path)
        owner = self._ownership.owner_pid() or (found[0] if found else None) or self.owner_pid
        fresh = found is not None and found[0] == owner and _age(path) < STALE_STATUS_SECONDS
        alive = owner is not None and process_alive(owner) and fresh
        if owner is not None:
            self.owner_pid = owner
        if found is not None and alive:
            return replace(found[1], owner_pid=owner, service_alive=True)
        return BridgeStatus(listening=False, port=self.settings.receive_port, receiver_error="", pending=(),
                            outbox_waiting=outbox_waiting(self.layout), owner_pid=self.owner_pid,
                            service_alive=False)

    def apply(self, settings: Settings) -> str:
        self.settings = settings
        return "saved; the service applies the file by itself"

    def echo(self, settings: Settings) -> Outcome:
        return echo(settings)

    def test_mail(self, settings: Settings) -> Outcome:
        return test_mail(settings)

    def again(self, entry: LogEntry) -> Outcome:
        def ask_service(folder: Path) -> str:
            request_zip_again(self.layout, folder, who())
            return "asked the service to zip it again"

        return _again(self.layout, self.logbook, entry, ask_service)

    def reason(self, entry: LogEntry) -> str:
        return reason_text(Path(entry.target)) if entry.target else ""

    def close(self) -> None:
        self._watcher.stop.set()
        self.logbook.close()


def _age(path: Path) -> float:
    import time

    try:
        return time.time() - path.stat().st_mtime
    except OSError:
        return float("inf")


def open_session(settings: Settings, config_path: Path, bind_address: str = "") -> Session:
    """Host the bridge, or attach when a running service already owns the storage folder."""
    try:
        engine = Engine(settings, bind_address=bind_address)
    except FolderOwnedElsewhere:
        owner = FolderOwnership(StorageLayout(settings.storage_folder).work).owner_pid()
        return AttachedSession(settings, config_path, owner)
    try:
        engine.start()
    except ReceiverStartError:
        pass  # the status line shows engine.receiver_error; zipping and sending run on
    return HostedSession(engine, config_path)
