"""Apply a saved settings file to the running engine (the UI, attached or not, saves there).

An invalid file is refused with a log-book error; the last good settings stay in force.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import watchfiles

from .engine import Engine
from .events import ConfigFileChanged
from .logbook import FAILED, SERVICE, WARNING, LogEntry
from .settings import SettingsError, load_settings, unknown_keys

log = logging.getLogger(__name__)


def watch_config(path: Path, engine: Engine, stop: threading.Event) -> threading.Thread:
    """Start a thread that re-reads ``path`` whenever it changes and applies it."""

    def is_config(_change: watchfiles.Change, changed: str) -> bool:
        return Path(changed).name == path.name

    def run() -> None:
        for _changes in watchfiles.watch(path.parent, watch_filter=is_config, stop_event=stop,
                                         raise_interrupt=False, debounce=300):
            apply_file(path, engine)

    thread = threading.Thread(target=run, name="config-watch", daemon=True)
    thread.start()
    return thread


def apply_file(path: Path, engine: Engine) -> None:
    try:
        settings = load_settings(path)
    except (SettingsError, OSError) as err:
        engine.logbook.add(LogEntry(action=SERVICE, status=FAILED,
                                    detail=f"settings file refused, the last good settings stay in force: {err}"))
        return
    engine.bus.publish(ConfigFileChanged())
    if settings == engine.settings:
        return
    for warning in unknown_keys(path):
        engine.logbook.add(LogEntry(action=SERVICE, status=WARNING, detail=warning))
    note = engine.apply_settings(settings)
    if note:
        engine.logbook.add(LogEntry(action=SERVICE, status=WARNING, detail=note))
