"""Small stand-ins the tests share: a clock they move by hand, a file as the receiver leaves it."""

from __future__ import annotations

import threading
from pathlib import Path


class FakeClock:
    """A worker's clock (aggregator, outbox), moved by the test: hours pass in no time."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start
        self.lock = threading.Lock()

    def __call__(self) -> float:
        with self.lock:
            return self.now

    def advance(self, seconds: float) -> None:
        with self.lock:
            self.now += seconds


def received_file(folder: Path, name: str) -> Path:
    """A file as pynetdicom leaves a received dataset, for the aggregator to store."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(name.encode())
    return path
