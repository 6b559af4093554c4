"""Apply a saved settings file to the running engine (the UI, attached or not, saves there).

Only the one file is watched, by polling its status every ``POLL_SECONDS`` (size, time stamp,
inode: a save by rename is seen too): watching its folder recursively let any odd file name
elsewhere under it kill the watcher. An invalid, unreadable, empty or deleted file is refused
with a log-book row; the last good settings stay in force (a missing file is not re-created
with defaults behind the admin's back).
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

import tomlkit

from .engine import Engine
from .events import ConfigFileChanged
from .logbook import SERVICE, WARNING, LogEntry
from .settings import SettingsError, load_settings, unknown_keys

log = logging.getLogger(__name__)

POLL_SECONDS = 1.0
_Stamp = tuple[int, int, int] | None


def watch_config(path: Path, engine: Engine, stop: threading.Event) -> threading.Thread:
    """Start a (supervised) thread that re-reads ``path`` whenever it changes and applies it."""
    seen: list[_Stamp] = [file_stamp(path)]

    def run() -> None:
        while not stop.wait(POLL_SECONDS):
            stamp = file_stamp(path)
            if stamp != seen[0]:
                seen[0] = stamp
                apply_file(path, engine)

    thread = engine.supervisor.thread("config watcher", run, stop)
    thread.start()
    return thread


def file_stamp(path: Path) -> _Stamp:
    """(mtime, size, inode) of a file, or None when it is missing: a change of any means re-read it."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_mtime_ns, info.st_size, info.st_ino


def apply_file(path: Path, engine: Engine) -> None:
    problem = _unusable(path)
    if problem:
        _refuse(engine, problem)
        return
    try:
        settings = load_settings(path)
    except (SettingsError, OSError, UnicodeDecodeError) as err:
        _refuse(engine, str(err))
        return
    engine.bus.publish(ConfigFileChanged())
    if settings == engine.settings:
        return
    for warning in unknown_keys(path):
        engine.logbook.add(LogEntry(action=SERVICE, status=WARNING, detail=warning))
    note = engine.apply_settings(settings)
    if note:
        engine.logbook.add(LogEntry(action=SERVICE, status=WARNING, detail=note))


def _unusable(path: Path) -> str:
    """Why the file cannot be the settings now (missing, unreadable, empty), or ''."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return f"config file {path} was deleted"
    except (OSError, UnicodeDecodeError) as err:
        return f"config file {path} cannot be read ({err})"
    try:
        empty = not tomlkit.parse(text).unwrap()
    except tomlkit.exceptions.TOMLKitError:
        return ""  # load_settings says what is wrong
    return f"config file {path} is empty" if empty else ""


def _refuse(engine: Engine, why: str) -> None:
    log.warning("settings file refused: %s", why)
    engine.logbook.add(LogEntry(action=SERVICE, status=WARNING, needs_attention=True,
                                detail=f"settings file refused, the last good settings stay in force: {why}"))
