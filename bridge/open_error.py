"""The status line's "last error": the newest failure not yet followed by a success of its kind.

A failed send is cleared by the next successful send, a failed receive by the next study
zipped, a service failure (e.g. the port could not be opened) by the next service start or
settings applied. So the status line says what is wrong now, not what was wrong once.
"""

from __future__ import annotations

from .logbook import FAILED, INFO, SUCCESS, LogEntry

RECENT_ROWS = 200


def open_error(newest_first: list[LogEntry]) -> str:
    """``"<time> <action>: <detail>"`` of the newest failure still open, or empty."""
    settled: set[str] = set()
    for entry in newest_first:
        if entry.status in (SUCCESS, INFO):
            settled.add(entry.action)
        elif entry.status == FAILED and entry.action not in settled:
            return f"{entry.timestamp[11:19]} {entry.action.lower()}: {entry.detail}"
    return ""
