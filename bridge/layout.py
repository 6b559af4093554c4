"""The storage folder's layout: the five folders the messaging app relies on, plus our own.

The bridge's working folders live under ``.bridge/`` (hidden, so nothing in them looks like
inbox content) and the logs under ``Logs/``. All of them are on the same file system as the
inboxes, so a finished ZIP reaches an inbox by a rename, never by a visible copy.
"""

from __future__ import annotations

import errno
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

INBOX_AUTO = "Inbox_Auto"
INBOX_MANUAL = "Inbox_Manual"
INBOX_FAILED = "Inbox_Failed"
OUTBOX_AUTO = "Outbox_Auto"
OUTBOX_FAILED = "Outbox_Failed"


FOLDER_GUIDE = (
    (INBOX_AUTO, "ZIPs of received studies with recipient IDs: the messaging app sends them on"),
    (INBOX_MANUAL, "ZIPs of received studies without (valid) recipient IDs: forward them by hand"),
    (INBOX_FAILED, "studies that could not be zipped, as received, with reason.txt (zip again from the Log Book)"),
    (OUTBOX_AUTO, "drop ZIPs here: their DICOM files are sent to the PACS, then the ZIP is deleted"),
    (OUTBOX_FAILED, "ZIPs the PACS did not take, with <name>.reason.txt (send again from the Log Book)"),
    ("Logs", "logbook.sqlite3 (the Log Book) and dicombridge.log (the text log)"),
    (".bridge", "the bridge's own work: spool of pending studies, ZIPs being written, mail queue, status"),
)


class StorageError(RuntimeError):
    """The storage folder cannot be used (missing permissions, not a folder, …)."""


@dataclass(frozen=True)
class StorageLayout:
    """Paths inside one storage folder; ``ensure()`` creates them."""

    root: Path

    @property
    def inbox_auto(self) -> Path:
        return self.root / INBOX_AUTO

    @property
    def inbox_manual(self) -> Path:
        return self.root / INBOX_MANUAL

    @property
    def inbox_failed(self) -> Path:
        return self.root / INBOX_FAILED

    @property
    def outbox_auto(self) -> Path:
        return self.root / OUTBOX_AUTO

    @property
    def outbox_failed(self) -> Path:
        return self.root / OUTBOX_FAILED

    @property
    def work(self) -> Path:
        """The bridge's private working area (hidden)."""
        return self.root / ".bridge"

    @property
    def incoming(self) -> Path:
        """Where pynetdicom streams a C-STORE while it arrives (partial files live here only)."""
        return self.work / "incoming"

    @property
    def spool(self) -> Path:
        """One folder per pending study, holding acknowledged instances as received."""
        return self.work / "spool"

    @property
    def staging(self) -> Path:
        """ZIPs being written; renamed into an inbox when complete."""
        return self.work / "staging"

    @property
    def outbox_work(self) -> Path:
        """ZIPs claimed from Outbox_Auto while they are unpacked and sent (re-sent after a crash)."""
        return self.work / "outbox"

    @property
    def mail_queue(self) -> Path:
        """Notification mails not yet delivered (.eml), kept across restarts."""
        return self.work / "mail"

    @property
    def logs(self) -> Path:
        return self.root / "Logs"

    @property
    def logbook_db(self) -> Path:
        return self.logs / "logbook.sqlite3"

    @property
    def text_log(self) -> Path:
        return self.logs / "dicombridge.log"

    def public_folders(self) -> tuple[Path, ...]:
        return (self.inbox_auto, self.inbox_manual, self.inbox_failed, self.outbox_auto, self.outbox_failed)

    def ensure(self) -> None:
        """Create every folder and prove the storage folder is writable, or raise StorageError."""
        try:
            for folder in (*self.public_folders(), self.incoming, self.spool, self.staging, self.outbox_work,
                           self.mail_queue, self.logs):
                folder.mkdir(parents=True, exist_ok=True)
            probe = self.work / f"write-test-{uuid.uuid4().hex}"
            probe.write_bytes(b"ok")
            probe.unlink()
        except OSError as err:
            raise StorageError(
                f"storage folder {self.root} is not usable: {err.strerror or err} "
                f"(set general.storage_folder to a folder this user can write to)"
            ) from None


def free_megabytes(path: Path) -> float:
    """Free space for unprivileged users on the file system holding ``path``."""
    usage = shutil.disk_usage(path)
    return usage.free / (1024 * 1024)


def is_disk_full_error(err: OSError) -> bool:
    return err.errno in (errno.ENOSPC, errno.EDQUOT)


def write_whole(path: Path, data: bytes) -> None:
    """Write ``data`` so that a file under ``path``'s name is always whole (``.part`` first, then a rename)."""
    partial = path.with_suffix(".part")
    with open(partial, "wb") as sink:
        sink.write(data)
    os.replace(partial, path)


def fsync_path(path: Path) -> None:
    """Flush a file or folder to stable storage (folders: makes a rename in them durable)."""
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) if path.is_dir() else os.O_RDONLY
    try:
        fd = os.open(path, flags)
    except OSError:
        return  # e.g. Windows cannot open folders; nothing more we can do there
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def link_without_overwrite(source: Path, target: Path) -> bool:
    """Make ``source`` appear at ``target`` only if nothing is there; True on success.

    A hard link is atomic and fails if the name exists, so two bridges (or a person) can never
    overwrite each other's ZIP. Where links are unsupported (some shares, file systems, or no
    ``os.link`` at all) it falls back to a rename that refuses an existing name: checked first
    here, and refused by Windows itself, whose rename never replaces.
    """
    link = getattr(os, "link", None)
    try:
        if link is None:
            raise NotImplementedError("os.link")
        link(source, target)
    except FileExistsError:
        return False
    except (OSError, NotImplementedError) as err:
        if isinstance(err, OSError) and err.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EXDEV):
            raise
        if target.exists():
            return False
        try:
            os.rename(source, target)
        except FileExistsError:
            return False
        return True
    os.unlink(source)
    return True
