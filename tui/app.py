"""The DicomBridge terminal UI: Log Book and Settings over a hosted or attached bridge.

Engine events arrive on worker threads and are forwarded with ``post_message`` (thread-safe);
the screens read the log book and the status snapshot through the session, never through
the workers themselves.
"""

from __future__ import annotations

import sys
from pathlib import Path

from textual.app import App, ScreenStackError
from textual.binding import Binding

from bridge.events import BridgeEvent, LogBookEntryAdded
from bridge.headless import EXIT_START_FAILED
from bridge.layout import StorageError
from bridge.session import Session, open_session
from bridge.settings import Settings

from .logbook_screen import LogBookScreen
from .messages import EngineEvent
from .settings_screen import SettingsScreen
from .status_bar import StatusBar, describe


class DicomBridgeApp(App):
    CSS_PATH = "app.tcss"
    TITLE = "DicomBridge"
    MODES = {"logbook": LogBookScreen, "settings": SettingsScreen}
    DEFAULT_MODE = "logbook"
    BINDINGS = [
        Binding("f2", "switch_mode('logbook')", "Log Book"),
        Binding("f3", "switch_mode('settings')", "Settings"),
        Binding("ctrl+q", "quit", "Quit"),
    ]

    def __init__(self, session: Session) -> None:
        super().__init__()
        self.session = session
        self.logbook_version = 0  # bumped per log-book event; screens reload when it moved
        self.last_error = ""
        self._unsubscribe = lambda: None

    def on_mount(self) -> None:
        self.sub_title = self.session.label
        self._unsubscribe = self.session.subscribe(self._forward)
        self.set_interval(1.0, self.refresh_status)
        self.refresh_status()

    def _forward(self, event: BridgeEvent) -> None:
        """Engine threads call this; ``post_message`` is thread-safe."""
        self.post_message(EngineEvent(event))

    def on_engine_event(self, message: EngineEvent) -> None:
        if isinstance(message.event, LogBookEntryAdded):
            self.logbook_version += 1

    def refresh_status(self) -> None:
        try:
            screen = self.screen
        except ScreenStackError:
            return  # between screens while the app starts or closes
        text = describe(self.session.status(), self.last_error)
        for bar in screen.query(StatusBar):
            bar.update(text)

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
