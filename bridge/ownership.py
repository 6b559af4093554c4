"""One running bridge per storage folder: an OS file lock held for the process's life.

The OS releases the lock when the process dies (even by ``kill -9``), so a crash never
leaves a stale lock behind. The owner's PID is written beside it for messages.
"""

from __future__ import annotations

import os
from pathlib import Path

from filelock import FileLock, Timeout


class FolderOwnedElsewhere(RuntimeError):
    """Another running bridge owns this storage folder."""


class FolderOwnership:
    def __init__(self, work_folder: Path) -> None:
        self._lock = FileLock(str(work_folder / "owner.lock"))
        self._pid_file = work_folder / "owner.pid"

    def acquire(self) -> None:
        try:
            self._lock.acquire(timeout=0)
        except Timeout:
            owner = self.owner_pid()
            raise FolderOwnedElsewhere(
                f"another DicomBridge (pid {owner or 'unknown'}) already runs on this storage folder; "
                f"stop it first, or use a different general.storage_folder"
            ) from None
        self._pid_file.write_text(str(os.getpid()), encoding="ascii")

    def owner_pid(self) -> int | None:
        try:
            return int(self._pid_file.read_text(encoding="ascii").strip())
        except (OSError, ValueError):
            return None

    def release(self) -> None:
        if self._lock.is_locked:
            self._pid_file.unlink(missing_ok=True)
            self._lock.release()
