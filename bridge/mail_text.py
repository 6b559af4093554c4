"""What a notification mail says: what a person needs to act on, and nothing more.

Subjects never name the patient (they are shown in lists, previews and server logs). With
``notify.no_phi`` the body leaves out the patient's name, birth date, recipient IDs and file
names (ZIP names carry the patient's name), and scrubs them from the reason text too.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path

from .logbook import FAILED, RECEIVE, SEND, SERVICE, LogEntry
from .study_record import STUDY_COLUMNS

FAILURE = "failure"
ARRIVAL = "arrival"
REMOVED = "[left out]"
# study columns ``describe`` words itself; any other mailed column gets a "<label>: <value>" line
_WRITTEN_OUT = frozenset({"patient_name", "birth_date", "study_date", "modality", "image_count", "crid"})


@dataclass(frozen=True)
class Notice:
    """One log-book row worth a mail, and which kind of mail."""

    kind: str
    entry: LogEntry


def headline(notice: Notice) -> str:
    """Short enough for a subject line (long subjects get folded and cut off in mail lists)."""
    entry = notice.entry
    if notice.kind == ARRIVAL:
        folder = Path(entry.target).parent.name or "an inbox"
        return f"{entry.modality or '?'} {entry.study_date or ''}, {entry.image_count} images in {folder}"
    if entry.action == RECEIVE and entry.status == FAILED:
        return "study went to Inbox_Failed"
    if entry.action == SEND and entry.status == FAILED:
        return "ZIP not sent, in Outbox_Failed"
    if entry.action == SERVICE and entry.status == FAILED:
        return "bridge not working as configured"
    if entry.needs_attention:
        return "receiving needs attention"
    return f"{entry.action} {entry.status.lower()}"


def _scrub(text: str, entry: LogEntry) -> str:
    for secret in (entry.patient_name, Path(entry.target).name if entry.target.endswith(".zip") else ""):
        if secret:
            text = text.replace(secret, REMOVED)
    return text


def describe(notice: Notice, no_phi: bool) -> str:
    """The block of lines for one event."""
    entry = notice.entry
    lines = [f"What:        {headline(notice)}", f"When:        {entry.timestamp}"]
    if entry.detail:
        lines.append(f"Reason:      {_scrub(entry.detail, entry) if no_phi else entry.detail}")
    if entry.patient_name or entry.study_date or entry.image_count:
        if not no_phi:
            born = f" (born {entry.birth_date})" if entry.birth_date else ""
            lines.append(f"Patient:     {entry.patient_name or '?'}{born}")
        lines += [f"Study date:  {entry.study_date or '?'}", f"Modality:    {entry.modality or '?'}",
                  f"Images:      {entry.image_count}"]
        if entry.crid and not no_phi:
            lines.append(f"Recipients:  {entry.crid}")
        for column in STUDY_COLUMNS:  # columns added to the study record since these lines were written
            value = getattr(entry, column.name)
            if column.mailed and column.name not in _WRITTEN_OUT and value and not (column.phi and no_phi):
                lines.append(f"{column.label + ':':<13}{value}")
    if entry.target:
        where = Path(entry.target)
        lines.append(f"Where:       {where.parent if no_phi and entry.target.endswith('.zip') else where}")
    return "\n".join(lines)


def _footer(storage: Path) -> str:
    return (f"\n\n-- \nDicomBridge on {socket.gethostname()}, storage folder {storage}.\n"
            f"Details are in the Log Book (run dicombridge, F2).\n")


def compose_single(notice: Notice, no_phi: bool, storage: Path) -> tuple[str, str]:
    """Subject and body for one event."""
    prefix = "Failed" if notice.kind == FAILURE else "Arrived"
    return (f"[DicomBridge {socket.gethostname()}] {prefix}: {headline(notice)}",
            describe(notice, no_phi) + _footer(storage))


def compose_summary(notices: list[Notice], no_phi: bool, storage: Path) -> tuple[str, str]:
    """One mail for a burst: how many, then each event's block."""
    kind = notices[0].kind
    what = f"{len(notices)} failures" if kind == FAILURE else f"{len(notices)} studies arrived"
    body = (f"{what} in a short time; each is listed below.\n\n"
            + "\n\n".join(describe(n, no_phi) for n in notices))
    return f"[DicomBridge {socket.gethostname()}] {what}", body + _footer(storage)


def compose_digest(subjects_and_bodies: list[tuple[str, str]]) -> tuple[str, str]:
    """Mails held back while the mail server was down, delivered as one."""
    body = (f"{len(subjects_and_bodies)} notifications could not be mailed while the mail server was "
            f"unreachable; here they are together.\n\n"
            + "\n\n".join(f"=== {subject}\n{text.strip()}" for subject, text in subjects_and_bodies))
    return f"[DicomBridge {socket.gethostname()}] {len(subjects_and_bodies)} delayed notifications", body
