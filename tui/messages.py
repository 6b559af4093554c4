"""Messages that carry the bridge's changes into the Textual app (posted from worker threads).

The frequent ones replace their older queued copy (``can_replace``, as Toolong does), so a
burst of log-book rows or status changes costs the UI one update, not one per change.
"""

from __future__ import annotations

from textual.message import Message

from bridge.events import BridgeStatus


class LogBookRowsAdded(Message):
    """New rows wait in the app's queue; one message drains all of them."""

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, LogBookRowsAdded)


class StatusUpdated(Message):
    """The bridge's status changed; only the newest one matters."""

    def __init__(self, status: BridgeStatus) -> None:
        super().__init__()
        self.status = status

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, StatusUpdated)


class ConfigChanged(Message):
    """The settings file changed on disk (a hand edit, or our own Save)."""

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, ConfigChanged)


class SessionReplied(Message):
    """An action run on a worker (echo, test mail) came back: ``ok`` and what to show."""

    def __init__(self, ok: bool, text: str) -> None:
        super().__init__()
        self.ok = ok
        self.text = text
