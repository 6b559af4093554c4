"""The persistent log book: one SQLite row per action (receive, send, error, cleanup).

SQLite in WAL mode lets the terminal UI (possibly another process) read while the service
writes. Rows carry the Log Book's columns (README "The terminal UI") plus ``detail`` (error text) and ``target`` (ZIP or
folder). Rows older than ``RETENTION_DAYS`` are pruned so the file cannot grow forever.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timedelta
from pathlib import Path

from .events import EventBus, LogBookEntryAdded
from .study_record import StudyColumns
from .visible_text import visible

log = logging.getLogger(__name__)

RETENTION_DAYS = 365
MAX_BACKLOG = 1000  # rows kept in memory while the database cannot be written

# Actions and statuses shown in the Log Book's columns.
RECEIVE = "Receive"
SEND = "Send"
CLEANUP = "Cleanup"
SERVICE = "Service"
SUCCESS = "Success"
WARNING = "Warning"
FAILED = "Failed"
INFO = "Info"

# The study columns come from the study record; a column added there is added to an older table at open.
_STUDY_COLUMNS = tuple(item.name for item in fields(StudyColumns))
_COLUMNS = ("timestamp", *_STUDY_COLUMNS, "action", "status", "detail", "target")
_INTEGER_COLUMNS = frozenset(item.name for item in fields(StudyColumns) if item.type in (int, "int"))
_TEXT_COLUMNS = tuple(name for name in _COLUMNS if name != "timestamp" and name not in _INTEGER_COLUMNS)

# PRAGMA user_version of the log book. 0: the table as first written (no version). 1: an index on
# the time stamp, which the yearly pruning and the newest-first reads use.
SCHEMA_VERSION = 1


@dataclass
class LogEntry(StudyColumns):
    """One log-book row; study columns (``StudyColumns``, keywords only) stay empty for entries not about one study."""

    action: str
    status: str
    detail: str = ""
    target: str = ""
    needs_attention: bool = False  # not a column: a warning a person must act on (mailed like a failure)
    timestamp: str = field(default_factory=lambda: datetime.now().astimezone().isoformat(timespec="seconds"))
    entry_id: int | None = None


def _column_type(name: str) -> str:
    return "INTEGER" if name in _INTEGER_COLUMNS else "TEXT"


def _is_current(db: sqlite3.Connection) -> bool:
    present = {row[1] for row in db.execute("PRAGMA table_info(entries)")}
    return db.execute("PRAGMA user_version").fetchone()[0] >= SCHEMA_VERSION and present >= set(_COLUMNS)


def migrate(db: sqlite3.Connection) -> None:
    """Create the table, or bring one written by an earlier version up to this one, in place.

    Rows are kept: columns are only added (empty in old rows), never renamed or dropped, so an
    older bridge can still read a newer file. One transaction: a failure leaves the file as it was.
    """
    if _is_current(db):
        return  # nothing to write: a reader (an attached UI) takes no write lock
    db.execute("BEGIN IMMEDIATE")  # a second process opening the file at the same time waits, then finds it done
    try:
        db.execute("CREATE TABLE IF NOT EXISTS entries (id INTEGER PRIMARY KEY AUTOINCREMENT, "
                   + ", ".join(f"{name} {_column_type(name)}" for name in _COLUMNS) + ")")
        present = {row[1] for row in db.execute("PRAGMA table_info(entries)")}
        for name in _COLUMNS:
            if name not in present:
                default = " DEFAULT 0" if name in _INTEGER_COLUMNS else " DEFAULT ''"
                db.execute(f"ALTER TABLE entries ADD COLUMN {name} {_column_type(name)}{default}")
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version < 1:
            db.execute("CREATE INDEX IF NOT EXISTS entries_by_time ON entries (timestamp)")
        if version < SCHEMA_VERSION:
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    except BaseException:
        db.rollback()
        raise
    db.commit()


class LogBook:
    """Thread-safe writer/reader of the log book file."""

    def __init__(self, path: Path, bus: EventBus | None = None) -> None:
        self.path = path
        self._bus = bus
        self._lock = threading.Lock()
        self._backlog: list[LogEntry] = []
        self._db = sqlite3.connect(path, check_same_thread=False, timeout=10)
        self._db.execute("PRAGMA journal_mode=WAL")
        migrate(self._db)

    def add(self, entry: LogEntry) -> LogEntry:
        """Store a row, mirror it to the text log, and announce it on the event bus.

        Never raises: when the database cannot be written (disk full, I/O error) the row waits
        in memory and is written with the next row that succeeds; the worker carries on.
        Text columns are stored on one visible line: values from a sender's files (names, error
        messages quoting them) could hold tabs, newlines or bidirectional overrides.
        """
        for name in _TEXT_COLUMNS:
            value = getattr(entry, name)
            if isinstance(value, str):
                setattr(entry, name, visible(value))
        with self._lock:
            self._backlog.append(entry)
            try:
                while self._backlog:
                    pending = self._backlog[0]
                    values = asdict(pending)
                    cursor = self._db.execute(
                        f"INSERT INTO entries ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})",
                        [values[name] for name in _COLUMNS],
                    )
                    self._db.commit()
                    pending.entry_id = cursor.lastrowid
                    self._backlog.pop(0)
            except (sqlite3.Error, OSError) as err:
                self._rollback_quietly()
                del self._backlog[:-MAX_BACKLOG]
                log.error("log book not writable (%s); %d rows wait in memory", err, len(self._backlog))
        level = (logging.ERROR if entry.status == FAILED
                 else logging.WARNING if entry.status == WARNING else logging.INFO)
        log.log(level, "%s %s: %s %s %s", entry.action, entry.status, entry.patient_name,
                entry.target, entry.detail)
        if self._bus is not None:
            self._bus.publish(LogBookEntryAdded(entry.entry_id or 0, entry.action, entry.status, entry))
        return entry

    def _rollback_quietly(self) -> None:
        try:
            self._db.rollback()
        except sqlite3.Error:
            pass

    def newest(self, limit: int = 500) -> list[LogEntry]:
        """The newest rows first, as the Log Book screen shows them."""
        with self._lock:
            rows = self._db.execute(
                f"SELECT id, {', '.join(_COLUMNS)} FROM entries ORDER BY id DESC LIMIT ?", (limit,)
            ).fetchall()
        return [LogEntry(entry_id=row[0], **dict(zip(_COLUMNS, row[1:], strict=True))) for row in rows]

    def newest_after(self, entry_id: int, limit: int = 500) -> list[LogEntry]:
        """Rows written after ``entry_id``, newest first (what a reader has not seen yet)."""
        with self._lock:
            rows = self._db.execute(
                f"SELECT id, {', '.join(_COLUMNS)} FROM entries WHERE id > ? ORDER BY id DESC LIMIT ?",
                (entry_id, limit),
            ).fetchall()
        return [LogEntry(entry_id=row[0], **dict(zip(_COLUMNS, row[1:], strict=True))) for row in rows]

    def latest_id(self) -> int:
        """Id of the newest row (0 when empty); a reader in another process polls this."""
        with self._lock:
            row = self._db.execute("SELECT MAX(id) FROM entries").fetchone()
        return int(row[0] or 0)

    def prune(self, now: datetime | None = None) -> int:
        """Delete rows older than the retention period; returns how many went."""
        cutoff = ((now or datetime.now().astimezone()) - timedelta(days=RETENTION_DAYS)).isoformat(timespec="seconds")
        with self._lock:
            try:
                cursor = self._db.execute("DELETE FROM entries WHERE timestamp < ?", (cutoff,))
                self._db.commit()
            except (sqlite3.Error, OSError) as err:
                self._rollback_quietly()
                log.error("log book not pruned (%s); trying again at the next sweep", err)
                return 0
        return cursor.rowcount

    def close(self) -> None:
        with self._lock:
            try:
                self._db.close()
            except sqlite3.Error:
                pass
