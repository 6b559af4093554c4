"""What the terminal UI holds: a running bridge it hosts, or one it attaches to.

Only one bridge may own a storage folder. The UI started while a headless service owns it
attaches instead: it reads that service's log book (SQLite, shared safely between processes)
and edits its settings file, which the service applies by itself. Both kinds of session offer
the same narrow interface, so the UI never knows which one it has.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from .engine import Engine, outbox_waiting
from .events import BridgeStatus, EventBus, LogBookEntryAdded, Subscriber
from .layout import StorageLayout
from .logbook import LogBook, LogEntry
from .ownership import FolderOwnedElsewhere, FolderOwnership
from .receiver import ReceiverStartError
from .settings import Settings

ATTACHED_POLL_SECONDS = 0.5


class Session(Protocol):
    config_path: Path
    attached: bool
    label: str  # what the title bar says the UI is connected to

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]: ...
    def newest(self, limit: int = 500) -> list[LogEntry]: ...
    def status(self) -> BridgeStatus: ...
    def apply(self, settings: Settings) -> str: ...
    def close(self) -> None: ...


class HostedSession:
    """The UI runs the workers itself (no service owns the folder)."""

    attached = False

    def __init__(self, engine: Engine, config_path: Path) -> None:
        self.engine = engine
        self.config_path = config_path
        self.label = str(config_path)

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        return self.engine.bus.subscribe(subscriber)

    def newest(self, limit: int = 500) -> list[LogEntry]:
        return self.engine.logbook.newest(limit)

    def status(self) -> BridgeStatus:
        return self.engine.status()

    def apply(self, settings: Settings) -> str:
        return self.engine.apply_settings(settings)

    def close(self) -> None:
        self.engine.stop(grace_seconds=5)


class AttachedSession:
    """A headless service owns the folder: show its log book live, leave its workers alone."""

    attached = True

    def __init__(self, settings: Settings, config_path: Path, owner_pid: int | None) -> None:
        self.config_path = config_path
        self.layout = StorageLayout(settings.storage_folder)
        self.settings = settings
        self.owner_pid = owner_pid
        self.label = f"attached to the running service (pid {owner_pid or '?'}) · {config_path}"
        self.bus = EventBus()
        self.logbook = LogBook(self.layout.logbook_db)
        self._stop = threading.Event()
        self._seen = self.logbook.latest_id()
        threading.Thread(target=self._watch, name="logbook-watch", daemon=True).start()

    def _watch(self) -> None:
        """Another process writes the log book; announce its new rows like the engine would."""
        while not self._stop.wait(ATTACHED_POLL_SECONDS):
            latest = self.logbook.latest_id()
            if latest > self._seen:
                self._seen = latest
                self.bus.publish(LogBookEntryAdded(latest, "", ""))

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        return self.bus.subscribe(subscriber)

    def newest(self, limit: int = 500) -> list[LogEntry]:
        return self.logbook.newest(limit)

    def status(self) -> BridgeStatus:
        return BridgeStatus(listening=False, port=self.settings.receive_port,
                            receiver_error="", pending=(), outbox_waiting=outbox_waiting(self.layout),
                            owner_pid=self.owner_pid)

    def apply(self, settings: Settings) -> str:
        self.settings = settings
        return "saved; the service applies the file by itself"

    def close(self) -> None:
        self._stop.set()
        self.logbook.close()


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
