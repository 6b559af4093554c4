"""The log book's schema version and migration: a database written by an earlier version is
upgraded in place when the bridge opens it, its rows kept and readable (issue 17, item 4)."""

from __future__ import annotations

import sqlite3
from dataclasses import fields
from pathlib import Path

from bridge.logbook import RECEIVE, SCHEMA_VERSION, SEND, SUCCESS, LogBook, LogEntry
from bridge.study_record import STUDY_COLUMNS, StudyColumns, StudyRecord, log_columns

# The table exactly as the bridge wrote it before the log book had a schema version (user_version 0).
VERSION_0_SQL = (
    "CREATE TABLE IF NOT EXISTS entries (id INTEGER PRIMARY KEY AUTOINCREMENT, timestamp TEXT, patient_name TEXT, "
    "birth_date TEXT, study_date TEXT, modality TEXT, image_count INTEGER, study_description TEXT, action TEXT, "
    "status TEXT, crid TEXT, detail TEXT, target TEXT)"
)
VERSION_0_COLUMNS = ("timestamp", "patient_name", "birth_date", "study_date", "modality", "image_count",
                     "study_description", "action", "status", "crid", "detail", "target")


def _version_0_database(path: Path, columns: tuple[str, ...] = VERSION_0_COLUMNS) -> None:
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(VERSION_0_SQL if columns == VERSION_0_COLUMNS else
               f"CREATE TABLE entries (id INTEGER PRIMARY KEY AUTOINCREMENT, {', '.join(columns)})")
    row = {"timestamp": "2026-11-20T09:00:00+01:00", "patient_name": "HOLTZMANN, Carsten",
           "birth_date": "1929-05-05", "study_date": "2004-07-22", "modality": "CT", "image_count": 412,
           "study_description": "CT Abdomen", "action": RECEIVE, "status": SUCCESS, "crid": "CRID#1234567890123456",
           "detail": "412 images zipped into Inbox_Auto", "target": "/store/Inbox_Auto/x.zip"}
    db.execute(f"INSERT INTO entries ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
               [row[name] for name in columns])
    db.commit()
    db.close()


def _user_version(path: Path) -> int:
    db = sqlite3.connect(path)
    try:
        return int(db.execute("PRAGMA user_version").fetchone()[0])
    finally:
        db.close()


def _indexes(path: Path) -> set[str]:
    db = sqlite3.connect(path)
    try:
        return {row[1] for row in db.execute("PRAGMA index_list(entries)")}
    finally:
        db.close()


def test_a_version_0_log_book_is_upgraded_in_place_and_its_rows_stay_readable(tmp_path: Path):
    path = tmp_path / "logbook.sqlite"
    _version_0_database(path)
    assert _user_version(path) == 0
    book = LogBook(path)
    try:
        (old,) = book.newest()
        assert (old.patient_name, old.image_count, old.crid, old.action) == (
            "HOLTZMANN, Carsten", 412, "CRID#1234567890123456", RECEIVE)
        book.add(LogEntry(action=SEND, status=SUCCESS, detail="sent", patient_name="NEW, Row", image_count=2))
        assert [e.patient_name for e in book.newest()] == ["NEW, Row", "HOLTZMANN, Carsten"]
    finally:
        book.close()
    assert _user_version(path) == SCHEMA_VERSION
    assert "entries_by_time" in _indexes(path)
    LogBook(path).close()  # opening a current file again changes nothing
    assert _user_version(path) == SCHEMA_VERSION


def test_a_study_column_missing_from_an_older_table_is_added_and_old_rows_read_empty(tmp_path: Path):
    """What adding a column to the study record does to existing log books (here: study_description)."""
    path = tmp_path / "logbook.sqlite"
    _version_0_database(path, tuple(name for name in VERSION_0_COLUMNS if name != "study_description"))
    book = LogBook(path)
    try:
        (old,) = book.newest()
        assert old.patient_name == "HOLTZMANN, Carsten" and old.study_description == ""
        book.add(LogEntry(action=RECEIVE, status=SUCCESS, study_description="Knee"))
        assert book.newest()[0].study_description == "Knee"
    finally:
        book.close()


def test_a_new_log_book_is_created_at_the_current_version(tmp_path: Path):
    path = tmp_path / "logbook.sqlite"
    LogBook(path).close()
    assert _user_version(path) == SCHEMA_VERSION and "entries_by_time" in _indexes(path)


def test_the_study_columns_and_their_display_forms_agree():
    """Each study column is a field of the log-book row and has one display form."""
    assert [item.name for item in fields(StudyColumns)] == [column.name for column in STUDY_COLUMNS]
    shown = log_columns(StudyRecord("HOLTZMANN^Carsten", "19290505", "M", "20040722", "CT Abdomen",
                                    modalities=("CT", "CT"), crids=("1234567890123456",)))
    assert shown == {"patient_name": "HOLTZMANN, Carsten", "birth_date": "1929-05-05", "study_date": "2004-07-22",
                     "modality": "CT", "image_count": 2, "study_description": "CT Abdomen",
                     "crid": "CRID#1234567890123456"}
