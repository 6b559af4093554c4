"""The service's status on disk, so a UI attached from another process sees what it sees.

The engine rewrites ``.bridge/status.json`` atomically (temp file + rename) every second;
a reader never sees half a file. The file names the writer's PID: a reader that finds the PID
gone (or another one) knows the service died or was replaced, whatever the file still says.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from .events import BridgeStatus, PendingInfo
from .layout import StorageLayout

log = logging.getLogger(__name__)

WRITE_EVERY_SECONDS = 1.0


def status_path(layout: StorageLayout) -> Path:
    return layout.work / "status.json"


def write_status(path: Path, status: BridgeStatus) -> None:
    data = asdict(status)
    data["pid"] = os.getpid()
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data), encoding="utf-8")
    os.replace(tmp, path)


def read_status(path: Path) -> tuple[int, BridgeStatus] | None:
    """(writer's pid, status) or None when there is no readable file."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        pid = int(data.pop("pid"))
        data["pending"] = tuple(PendingInfo(**item) for item in data.get("pending", ()))
        data["worker_notes"] = tuple(data.get("worker_notes", ()))  # JSON has lists; the status is compared
        return pid, BridgeStatus(**data)
    except (OSError, ValueError, TypeError, KeyError):
        return None


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by another user (the service account)
    except OSError:
        return False
    return True


class StatusFileWriter:
    """A thread writing ``status()`` to the status file every second until ``stop`` is set."""

    def __init__(self, layout: StorageLayout, status: Callable[[], BridgeStatus], stop: threading.Event) -> None:
        self.path = status_path(layout)
        self._status = status
        self._stop = stop
        self._thread = threading.Thread(target=self._run, name="status-file", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                write_status(self.path, self._status())
            except Exception:
                log.exception("status file %s not written", self.path)
            if self._stop.wait(WRITE_EVERY_SECONDS):
                break
        self.path.unlink(missing_ok=True)
