"""The Log Book: newest 500 actions, live, filterable, with the selected row's detail."""

from __future__ import annotations

from rich.markup import escape
from rich.text import Text
from textual.app import ComposeResult
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Input, Static

from bridge.logbook import FAILED, WARNING, LogEntry

from .status_bar import StatusBar

COLUMNS = ("Timestamp", "Patient Name", "Birthday", "Study Date", "Modality", "#", "Study Description",
           "Action", "Status", "CRID")
ROW_STYLE = {FAILED: "bold red", WARNING: "yellow"}


def row_cells(entry: LogEntry) -> list[Text]:
    values = (entry.timestamp.replace("T", " ")[:16], entry.patient_name, entry.birth_date, entry.study_date,
              entry.modality, str(entry.image_count or ""), entry.study_description, entry.action, entry.status,
              entry.crid)
    style = ROW_STYLE.get(entry.status, "")
    return [Text(value or "", style=style, no_wrap=True, overflow="ellipsis") for value in values]


def matches(entry: LogEntry, text: str) -> bool:
    """A filter word matches any column, the detail or the target (case-insensitive)."""
    if not text:
        return True
    haystack = " ".join(str(v) for v in (entry.timestamp, entry.patient_name, entry.birth_date, entry.study_date,
                                          entry.modality, entry.study_description, entry.action, entry.status,
                                          entry.crid, entry.detail, entry.target)).lower()
    return all(word in haystack for word in text.lower().split())


def describe_entry(entry: LogEntry) -> str:
    """The detail panel's text; values are escaped (a patient name may contain '[')."""
    lines = [f"[b]{escape(entry.action)} {escape(entry.status)}[/] {escape(entry.timestamp)}"]
    if entry.detail:
        lines.append(escape(entry.detail))
    if entry.target:
        lines.append(f"[dim]file/folder:[/] {escape(entry.target)}")
    return "\n".join(lines)


class LogBookScreen(Screen):
    """Rows are reloaded when the app says the log book changed (coalesced, twice a second)."""

    AUTO_FOCUS = "#logbook"
    BINDINGS = [("r", "reload", "Refresh"), ("slash", "focus_filter", "Filter"),
                ("escape", "focus_table", "Table")]

    def __init__(self) -> None:
        super().__init__()
        self._shown_version = -1
        self._entries: dict[str, LogEntry] = {}

    def compose(self) -> ComposeResult:
        yield Header()
        yield Input(placeholder="Filter: patient, ID, status (failed, warning)…  ( / )", id="filter")
        yield DataTable(id="logbook", cursor_type="row", zebra_stripes=True)
        yield Static("Select a row to see its details.", id="detail")
        yield StatusBar(id="status")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one(DataTable).add_columns(*COLUMNS)
        self.action_reload()
        self.set_interval(0.5, self._reload_if_changed)

    def on_screen_resume(self) -> None:
        self.app.refresh_status()  # type: ignore[attr-defined]

    def _reload_if_changed(self) -> None:
        if self.app.logbook_version != self._shown_version:  # type: ignore[attr-defined]
            self.action_reload()

    def action_reload(self) -> None:
        self._shown_version = self.app.logbook_version  # type: ignore[attr-defined]
        entries = self.app.session.newest(500)  # type: ignore[attr-defined]
        self.app.last_error = next((e.detail for e in entries if e.status == FAILED), "")  # type: ignore[attr-defined]
        wanted = self.query_one("#filter", Input).value.strip()
        shown = [entry for entry in entries if matches(entry, wanted)]
        table = self.query_one(DataTable)
        with self.app.batch_update():
            table.clear()
            self._entries = {str(entry.entry_id): entry for entry in shown}
            for entry in shown:
                table.add_row(*row_cells(entry), key=str(entry.entry_id))

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "filter":
            self.action_reload()

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        entry = self._entries.get(str(event.row_key.value))
        if entry is not None:
            self.query_one("#detail", Static).update(describe_entry(entry))

    def action_focus_filter(self) -> None:
        self.query_one("#filter", Input).focus()

    def action_focus_table(self) -> None:
        self.query_one(DataTable).focus()
