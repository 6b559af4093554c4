"""The one narrow interface between the engine and anything watching it (the TUI, tests).

Workers publish small immutable events; subscribers get them on the worker's thread and must
return quickly (the Textual app forwards them with ``post_message``, which is thread-safe).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .instance import ImageFacts
    from .logbook import LogEntry

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LogBookEntryAdded:
    """A row was written to the log book (its id lets a reader fetch the row).

    ``entry`` is the row itself when the writer is in this process (the notifier reads it);
    None when an attached UI only saw the id change in another process's database.
    """

    entry_id: int
    action: str
    status: str
    entry: LogEntry | None = None


@dataclass(frozen=True)
class MailQueued:
    """Notification mails were written to the mail queue; ``waiting`` are not delivered yet."""

    waiting: int


@dataclass(frozen=True)
class InstanceStored:
    """One C-STORE was acknowledged and its file is in the spool."""

    study_key: str
    pending_images: int
    sender: str = ""  # calling AE title @ address, for the Pending view
    file: str = ""  # where the image is in the spool
    facts: ImageFacts | None = None  # what the Pending view shows of it, peeked as it streamed in


@dataclass(frozen=True)
class StudyRouted:
    """A study left the spool: its ZIP (or failed folder) is in ``target``."""

    study_key: str
    target: str
    status: str


@dataclass(frozen=True)
class OutboxZipDone:
    """A ZIP from Outbox_Auto was sent (and deleted) or moved to Outbox_Failed (``target``)."""

    zip_name: str
    target: str
    status: str


@dataclass(frozen=True)
class ReceiverStateChanged:
    """The receiver started listening, stopped, or could not start (``error`` says why)."""

    listening: bool
    port: int
    error: str = ""


@dataclass(frozen=True)
class PendingInfo:
    """One study waiting in the spool, as the Pending view shows it."""

    key: str
    images: int
    seconds_left: float
    patient_name: str = ""
    study_date: str = ""
    modality: str = ""
    crids: str = ""  # recipient IDs found so far
    sender: str = ""  # calling AE title @ address of the association that brought it


@dataclass(frozen=True)
class BridgeStatus:
    """What a status line shows; pushed as StatusChanged when it changes, written to the status file."""

    listening: bool
    port: int
    receiver_error: str
    pending: tuple[PendingInfo, ...]
    outbox_waiting: int
    owner_pid: int | None  # set when the UI is attached to a service owning the folder
    outbox_note: str = ""  # e.g. "PACS unreachable since 10:02, 3 ZIPs waiting, next try 10:15:30"
    worker_notes: tuple[str, ...] = ()  # e.g. "outbox restarted 2× (OSError: …)"
    last_error: str = ""  # the newest failure not yet followed by a success of the same kind
    service_alive: bool = True  # attached: False once the owning service's process is gone


@dataclass(frozen=True)
class StatusChanged:
    """The status line's snapshot changed (published by the session's status watcher)."""

    status: BridgeStatus


@dataclass(frozen=True)
class ConfigFileChanged:
    """The settings file was changed (by hand or by a Save) and re-read."""


BridgeEvent = (LogBookEntryAdded | MailQueued | InstanceStored | StudyRouted | OutboxZipDone | ReceiverStateChanged
               | StatusChanged | ConfigFileChanged)
Subscriber = Callable[[BridgeEvent], None]


class EventBus:
    """Fan-out of engine events to subscribers; a failing subscriber never breaks a worker."""

    def __init__(self) -> None:
        self._subscribers: list[Subscriber] = []
        self._lock = threading.Lock()

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        with self._lock:
            self._subscribers.append(subscriber)

        def unsubscribe() -> None:
            with self._lock:
                if subscriber in self._subscribers:
                    self._subscribers.remove(subscriber)

        return unsubscribe

    def publish(self, event: BridgeEvent) -> None:
        with self._lock:
            subscribers = list(self._subscribers)
        for subscriber in subscribers:
            try:
                subscriber(event)
            except Exception:  # noqa: BLE001 - a broken listener must not stop reception
                log.exception("event subscriber failed on %r", event)
