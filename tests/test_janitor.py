"""The janitor deletes only what is old enough, only in the two failed folders, and says so."""

import os
import queue
import time

from bridge.events import LogBookEntryAdded
from bridge.janitor import sweep
from bridge.layout import StorageLayout
from bridge.logbook import CLEANUP, SUCCESS, LogBook

DAY = 86400


def _age(path, days):
    then = time.time() - days * DAY
    os.utime(path, (then, then))


def test_sweep_deletes_old_failed_entries_only(tmp_path):
    layout = StorageLayout(tmp_path)
    layout.ensure()
    logbook = LogBook(layout.logbook_db)
    old_study = layout.inbox_failed / "old-study"
    old_study.mkdir()
    (old_study / "1.dcm").write_bytes(b"x")
    (old_study / "reason.txt").write_text("why")
    old_zip = layout.outbox_failed / "old.zip"
    old_zip.write_bytes(b"zip")
    old_reason = layout.outbox_failed / "old.zip.reason.txt"
    old_reason.write_text("why")
    fresh_zip = layout.outbox_failed / "fresh.zip"
    fresh_zip.write_bytes(b"zip")
    old_elsewhere = [layout.inbox_auto / "old.zip", layout.inbox_manual / "old.zip", layout.outbox_auto / "old.zip"]
    for path in old_elsewhere:
        path.write_bytes(b"keep me")
    for path in (old_study, old_zip, old_reason, *old_elsewhere):
        _age(path, 8)
    _age(fresh_zip, 6)

    deleted = sweep(layout, logbook, keep_days=7)

    assert sorted(p.name for p in deleted) == ["old-study", "old.zip", "old.zip.reason.txt"]
    assert not old_study.exists() and not old_zip.exists() and not old_reason.exists()
    assert fresh_zip.exists() and all(p.exists() for p in old_elsewhere)
    rows = [r for r in logbook.newest() if r.action == CLEANUP]
    assert len(rows) == 3 and all(r.status == SUCCESS and "older than 7 days" in r.detail for r in rows)


def test_engine_runs_the_janitor_at_start_up(bridge_settings):
    from bridge.engine import Engine

    layout = StorageLayout(bridge_settings.storage_folder)
    layout.ensure()
    stale = layout.inbox_failed / "stale"
    stale.mkdir()
    _age(stale, 30)
    engine = Engine(bridge_settings, bind_address="127.0.0.1")
    events = queue.Queue()
    engine.bus.subscribe(events.put)
    engine.start()
    try:
        while True:
            event = events.get(timeout=30)
            if isinstance(event, LogBookEntryAdded) and event.action == CLEANUP:
                break
        assert not stale.exists()
    finally:
        engine.stop(grace_seconds=2)


def test_log_book_rows_wait_in_memory_while_the_database_cannot_be_written(tmp_path):
    import sqlite3

    from bridge.logbook import RECEIVE, LogEntry

    logbook = LogBook(tmp_path / "book.sqlite3")

    class Broken:
        def execute(self, *args):
            raise sqlite3.OperationalError("database or disk is full")

        def rollback(self):
            pass

    working, logbook._db = logbook._db, Broken()
    logbook.add(LogEntry(RECEIVE, SUCCESS, detail="first"))  # must not raise
    logbook._db = working
    logbook.add(LogEntry(RECEIVE, SUCCESS, detail="second"))
    assert [row.detail for row in logbook.newest()] == ["second", "first"]
