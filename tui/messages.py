"""Messages that carry engine events into the Textual app (posted from worker threads)."""

from __future__ import annotations

from textual.message import Message

from bridge.events import BridgeEvent
from bridge.sender import EchoResult


class EngineEvent(Message):
    """An engine event, forwarded as is; ``post_message`` is thread-safe."""

    def __init__(self, event: BridgeEvent) -> None:
        super().__init__()
        self.event = event


class EchoFinished(Message):
    """The Settings screen's C-ECHO came back (it ran on a worker thread)."""

    def __init__(self, result: EchoResult) -> None:
        super().__init__()
        self.result = result


class TestMailFinished(Message):
    """The Settings screen's test mail was handed over, or not (``ok``, and what to show)."""

    def __init__(self, ok: bool, text: str) -> None:
        super().__init__()
        self.ok = ok
        self.text = text
