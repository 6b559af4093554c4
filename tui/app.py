"""The DicomBridge terminal UI: Log Book, Pending and Settings over a hosted or attached bridge.

The session's events arrive on worker threads; the app turns them into coalesced messages
(``post_message`` is thread-safe) and its handlers own every UI change. Nothing polls: new
log-book rows and a changed status are pushed by the session.
"""

from __future__ import annotations

import sys
from collections import deque
from pathlib import Path

from textual.app import App, ScreenStackError
from textual.binding import Binding

from bridge.events import BridgeEvent, BridgeStatus, ConfigFileChanged, LogBookEntryAdded, StatusChanged
from bridge.session import EXIT_START_FAILED, LogEntry, Session, StorageError, open_session
from bridge.settings import Settings

from .help_screen import HelpScreen
from .logbook_screen import LogBookScreen
from .messages import ConfigChanged, LogBookRowsAdded, StatusUpdated
from .pending_screen import PendingScreen
from .settings_screen import SettingsScreen
from .status_bar import StatusBar, describe
from .unsaved_prompt import UnsavedPrompt

LOGBOOK_ROWS = 500


class DicomBridgeApp(App):
    CSS_PATH = "app.tcss"
    TITLE = "DicomBridge"
    MODES = {"logbook": LogBookScreen, "pending": PendingScreen, "settings": SettingsScreen}
    DEFAULT_MODE = "logbook"
    ENABLE_COMMAND_PALETTE = False  # its footer entry would push the screens' keys out of 80 columns
    BINDINGS = [
        Binding("f1", "help", "Help", priority=True),
        Binding("question_mark", "help", "Help", show=False),
        Binding("f2", "switch_mode('logbook')", "Log Book", priority=True),
        Binding("f3", "switch_mode('settings')", "Settings", priority=True),
        Binding("f4", "switch_mode('pending')", "Pending", priority=True),
        Binding("ctrl+q", "quit", "Quit", priority=True),
    ]

    def __init__(self, session: Session) -> None:
        super().__init__()
        self.session = session
        self.entries: list[LogEntry] = session.newest(LOGBOOK_ROWS)  # newest first; kept up to date by messages
        self.status: BridgeStatus | None = session.status()
        self._arrived: deque[LogEntry] = deque()  # filled on worker threads, drained on the UI thread
        self._unsubscribe = lambda: None

    def on_mount(self) -> None:
        self.sub_title = self.session.label
        self._unsubscribe = self.session.subscribe(self._forward)
        self.refresh_status()

    def _forward(self, event: BridgeEvent) -> None:
        """Runs on the bridge's threads: queue, then post a message that replaces its older copy."""
        if isinstance(event, LogBookEntryAdded) and event.entry is not None:
            self._arrived.append(event.entry)
            self.post_message(LogBookRowsAdded())
        elif isinstance(event, StatusChanged):
            self.post_message(StatusUpdated(event.status))
        elif isinstance(event, ConfigFileChanged):
            self.post_message(ConfigChanged())

    def on_log_book_rows_added(self, _message: LogBookRowsAdded) -> None:
        known = {entry.entry_id for entry in self.entries}
        new: list[LogEntry] = []
        while self._arrived:
            entry = self._arrived.popleft()
            if entry.entry_id not in known:
                new.append(entry)
        if not new:
            return
        new.sort(key=lambda entry: entry.entry_id or 0, reverse=True)
        self.entries = (new + self.entries)[:LOGBOOK_ROWS]
        for screen in self._mode_screens(LogBookScreen):
            screen.show_new(new)

    def on_status_updated(self, message: StatusUpdated) -> None:
        self.status = message.status
        self.refresh_status()
        for screen in self._mode_screens(PendingScreen):
            screen.show(message.status)

    def on_config_changed(self, _message: ConfigChanged) -> None:
        for screen in self._mode_screens(SettingsScreen):
            screen.file_changed()

    def _mode_screens(self, kind: type) -> list:
        """The mode screens of ``kind`` that exist (modes are created when first shown)."""
        return [stack[0] for stack in self._screen_stacks.values() if stack and isinstance(stack[0], kind)]

    def refresh_status(self) -> None:
        try:
            screen = self.screen
        except ScreenStackError:
            return  # between screens while the app starts or closes
        if self.status is None:
            return
        text = describe(self.status)
        for bar in screen.query(StatusBar):
            bar.update(text)

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    async def action_quit(self) -> None:
        """Ask before unsaved settings are lost; otherwise quit at once."""
        dirty = [screen for screen in self._mode_screens(SettingsScreen) if screen.dirty]
        if not dirty or isinstance(self.screen, UnsavedPrompt):
            self.exit()
            return
        settings = dirty[0]

        def decide(choice: str | None) -> None:
            if choice == "save" and settings.save() or choice == "discard":
                self.exit()

        self.push_screen(UnsavedPrompt("quitting"), decide)

    def on_unmount(self) -> None:
        self._unsubscribe()


def run_tui(settings: Settings, config_path: Path) -> int:
    """Open the session (host or attach), run the UI, stop what we host on the way out.

    Returns the exit code: non-zero when the bridge or the UI could not start (a storage
    folder that cannot be used, unreadable styles…), so a script or an admin sees the failure.
    """
    stylesheet = Path(__file__).with_name(DicomBridgeApp.CSS_PATH)
    if not stylesheet.is_file():  # an incomplete install: say so before starting any worker
        print(f"dicombridge: the terminal UI cannot start: {stylesheet} is missing (reinstall dicombridge; "
              f"`dicombridge --headless` runs the bridge without the UI)", file=sys.stderr)
        return EXIT_START_FAILED
    try:
        session = open_session(settings, config_path)
    except StorageError as err:
        print(f"dicombridge: {err}", file=sys.stderr)
        return EXIT_START_FAILED
    app = DicomBridgeApp(session)
    try:
        app.run()
    finally:
        session.close()
    if app.return_code:  # Textual printed the error (e.g. a stylesheet it cannot read) above
        print(f"dicombridge: the terminal UI failed (exit code {app.return_code}); "
              f"`dicombridge --headless` runs the bridge without it", file=sys.stderr)
    return app.return_code or 0
