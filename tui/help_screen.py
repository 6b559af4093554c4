"""Help (F1 or ?): the admin's one-page manual — folders, keys, settings, files, pointing the PACS here.

Setting texts come from ``bridge.settings.SETTINGS`` and folder texts from the session's folder
guide, so the help says what the config file's comments and the README say.
"""

from __future__ import annotations

from rich.markup import escape
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Header, Static

from bridge.session import FOLDER_GUIDE
from bridge.settings import SETTINGS, file_values

KEYS = (
    ("F1 / ?", "this help (Escape closes it)"),
    ("F2", "Log Book: every action, newest first; / filters, ← → scroll the columns, d scrolls the detail"),
    ("a", ("on a failed row in the Log Book: send again (Outbox_Failed → Outbox_Auto) or zip again "
           "(Inbox_Failed → pending)")),
    ("F3", ("Settings: Ctrl+S save, Ctrl+R back to the file, Ctrl+E DICOM echo to the PACS, "
            "Ctrl+T test mail, Ctrl+O pick the storage folder (these work from any field)")),
    ("F4", "Pending: studies still arriving, with the seconds until each is zipped"),
    ("Ctrl+Q", "quit (asks first when settings are not saved); a hosted bridge stops, a service runs on"),
)


def help_text(storage: str, connection: str, ae_title: str, port: int) -> str:
    lines = ["[b reverse] Folders [/]", f"Storage folder: {escape(storage)}"]
    lines += [f"  [b]{escape(name)}[/] — {escape(what)}" for name, what in FOLDER_GUIDE]
    lines += ["", "[b reverse] Keys [/]"]
    lines += [f"  [b]{escape(key)}[/] — {escape(what)}" for key, what in KEYS]
    lines += ["", "[b reverse] Files [/]", f"  Settings file (connected to): {escape(connection)}",
              f"  Log book and text log: {escape(storage)}/Logs (logbook.sqlite3, dicombridge.log)",
              "", "[b reverse] Pointing the PACS at the bridge [/]",
              "  In the PACS, add a DICOM node (destination / AE) with:",
              f"    AE title [b]{escape(ae_title)}[/] (receive.ae_title), port [b]{port}[/] (receive.port),",
              "    host: this computer's IP address. Test it with the PACS's echo (verify) button;",
              "    the Log Book shows refused senders (receive.allowed_* settings).",
              "  For sending, set send.host, send.port and send.ae_title_receiver to the PACS's values and",
              "  press Ctrl+E in Settings; the PACS must know send.ae_title_sender as a sender.",
              "", "[b reverse] Settings [/]"]
    section = ""
    for spec in SETTINGS:
        if spec.section != section:
            section = spec.section
            lines.append(f"  [{escape(section)}]")
        lines.append(f"    [b]{escape(spec.key)}[/] — {escape(spec.help)}")
    return "\n".join(lines)


class HelpScreen(Screen):
    BINDINGS = [("escape", "app.pop_screen", "Close help"), ("q", "app.pop_screen", "Close")]
    AUTO_FOCUS = "#help"

    def compose(self) -> ComposeResult:
        yield Header()
        with VerticalScroll(id="help"):
            yield Static(id="help-text")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        session = self.app.session  # type: ignore[attr-defined]
        saved = file_values(session.config_path)
        ae_title, port = str(saved["receive.ae_title"]), int(saved["receive.port"])
        self.query_one("#help-text", Static).update(help_text(str(session.storage), session.label, ae_title, port))
