"""The Log Book: newest 500 actions, live, filterable; the selected row in full; act on failures.

The most important columns come first (time, patient or what happened, status, action), so
they fit 80 columns; the others scroll sideways, which the hint line says. New rows arrive
from the app (pushed by the session), nothing here polls.
"""

from __future__ import annotations

from rich.markup import escape
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Input, Static

from bridge.session import FAILED, STUDY_COLUMNS, WARNING, LogEntry, can_send_again, can_zip_again

from .messages import SessionReplied
from .status_bar import StatusBar

# The study's columns after the patient, short ones first (they fit beside it); columns the study
# record gains later come last, in its order.
_SHORT_FIRST = ("modality", "image_count", "study_date")
STUDY_CELLS = sorted((c for c in STUDY_COLUMNS if c.name != "patient_name"),
                     key=lambda c: _SHORT_FIRST.index(c.name) if c.name in _SHORT_FIRST else len(_SHORT_FIRST))
# (label, width): time, patient/what, status and action fit in 80 columns; the rest scroll.
COLUMNS = (("Time", 14), ("Patient / what happened", 24), ("Status", 7), ("Action", 7),
           *((c.label, c.width) for c in STUDY_CELLS))
ROW_STYLE = {FAILED: "bold red", WARNING: "yellow"}
WIDE_ENOUGH = sum(width + 2 for _, width in COLUMNS)


def short_time(timestamp: str) -> str:
    """``2026-11-23T09:41:07+01:00`` → ``11-23 09:41:07`` (local time as written, with seconds)."""
    return f"{timestamp[5:10]} {timestamp[11:19]}" if len(timestamp) >= 19 else timestamp


def row_cells(entry: LogEntry) -> list[Text]:
    what = entry.patient_name or entry.detail
    values = (short_time(entry.timestamp), what, entry.status, entry.action,
              *(str(getattr(entry, c.name) or "") for c in STUDY_CELLS))
    style = ROW_STYLE.get(entry.status, "")
    cells = [Text(value or "", style=style, no_wrap=True, overflow="ellipsis") for value in values]
    if not entry.patient_name:
        cells[1].stylize("italic")
    return cells


def matches(entry: LogEntry, text: str) -> bool:
    """A filter word matches any column, the detail or the target (case-insensitive)."""
    if not text:
        return True
    haystack = " ".join(str(v) for v in (entry.timestamp, *(getattr(entry, c.name) for c in STUDY_COLUMNS),
                                          entry.action, entry.status, entry.detail, entry.target)).lower()
    return all(word in haystack for word in text.lower().split())


_AFTER_THE_STUDY = ("image_count", "crid")  # the detail pane words these itself


def describe_entry(entry: LogEntry, reason: str = "") -> str:
    """The detail pane's text: the whole row; values are escaped (a patient name may contain '[')."""
    lines = [f"[b]{escape(entry.action)} {escape(entry.status)}[/] {escape(entry.timestamp)}"]
    study = ", ".join(escape(str(value)) for value in (getattr(entry, c.name) for c in STUDY_COLUMNS
                                                         if c.name not in _AFTER_THE_STUDY) if value)
    if study:
        lines.append(f"{study}; {entry.image_count} images" + (f"; {escape(entry.crid)}" if entry.crid else ""))
    if entry.detail:
        lines.append(escape(entry.detail))
    if entry.target:
        lines.append(f"[dim]file/folder:[/] {escape(entry.target)}")
    if reason.strip():
        lines.append(f"[dim]reason file:[/] {escape(reason.strip())}")
    if can_send_again(entry):
        lines.append("[b]a[/]: send again (back to Outbox_Auto)")
    elif can_zip_again(entry):
        lines.append("[b]a[/]: zip again (as if received now)")
    return "\n".join(lines)


class LogBookScreen(Screen):
    AUTO_FOCUS = "#logbook"
    BINDINGS = [Binding("a", "again", "Again"), Binding("slash", "focus_filter", "Filter"),
                Binding("escape", "focus_table", "Table", show=False),
                Binding("d", "focus_detail", "Detail", show=False)]

    def __init__(self) -> None:
        super().__init__()
        self._shown: dict[str, LogEntry] = {}
        self._id_of_time_cell: dict[int, int] = {}  # DataTable sorts by cell values: the Time cell names its row

    def compose(self) -> ComposeResult:
        yield Header()
        yield Input(placeholder="Filter: patient, ID, status (failed, warning)…  ( / )", id="filter")
        yield DataTable(id="logbook", cursor_type="row", zebra_stripes=True)
        yield Static("", id="columns-hint")
        with VerticalScroll(id="detail-pane"):
            yield Static("Select a row to see its details.", id="detail")
        yield StatusBar(id="status")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        for label, width in COLUMNS:
            table.add_column(label, width=width, key=label)
        self.show_all()

    def on_resize(self) -> None:
        narrow = self.size.width < WIDE_ENOUGH
        self.query_one("#columns-hint", Static).update(
            "[dim]More columns to the right (description, CRID…): scroll with ← →[/]" if narrow else "")
        self.query_one("#columns-hint").display = narrow

    def on_screen_resume(self) -> None:
        self.app.refresh_status()  # type: ignore[attr-defined]

    def _wanted(self) -> str:
        return self.query_one("#filter", Input).value.strip()

    def show_all(self) -> None:
        """Rebuild the table from the app's rows (at start and when the filter changes)."""
        wanted = self._wanted()
        shown = [entry for entry in self.app.entries if matches(entry, wanted)]  # type: ignore[attr-defined]
        table = self.query_one(DataTable)
        with self.app.batch_update():
            table.clear()
            self._shown = {}
            self._id_of_time_cell = {}
            for entry in shown:
                self._add(table, entry)

    def _add(self, table: DataTable, entry: LogEntry) -> None:
        cells = row_cells(entry)
        self._shown[str(entry.entry_id)] = entry
        self._id_of_time_cell[id(cells[0])] = entry.entry_id or 0
        table.add_row(*cells, key=str(entry.entry_id))

    def show_new(self, new: list[LogEntry]) -> None:
        """Add just the new rows, newest first, drop what fell off the end; the cursor stays on its row."""
        fresh = [entry for entry in new if matches(entry, self._wanted())]
        if not fresh:
            return
        table = self.query_one(DataTable)
        selected = self._selected()
        with self.app.batch_update():
            for entry in fresh:
                self._add(table, entry)
            kept = {str(entry.entry_id) for entry in self.app.entries}  # type: ignore[attr-defined]
            for key in [key for key in self._shown if key not in kept]:
                self._id_of_time_cell.pop(id(table.get_row(key)[0]), None)
                table.remove_row(key)
                del self._shown[key]
            table.sort("Time", key=lambda cell: self._id_of_time_cell.get(id(cell), 0), reverse=True)
        if selected is not None and str(selected.entry_id) in self._shown:  # it may have fallen off the end
            table.move_cursor(row=table.get_row_index(str(selected.entry_id)), animate=False)

    def _selected(self) -> LogEntry | None:
        table = self.query_one(DataTable)
        if table.row_count == 0:
            return None
        try:
            key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key
        except Exception:  # noqa: BLE001 - no row under the cursor
            return None
        return self._shown.get(str(key.value))

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "filter":
            self.show_all()

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        entry = self._shown.get(str(event.row_key.value))
        if entry is not None:
            reason = self.app.session.reason(entry)  # type: ignore[attr-defined]
            self.query_one("#detail", Static).update(describe_entry(entry, reason))

    def action_again(self) -> None:
        entry = self._selected()
        if entry is None:
            return
        self._again(entry)

    @work(thread=True, exclusive=True, group="again", exit_on_error=False)
    def _again(self, entry: LogEntry) -> None:
        outcome = self.app.session.again(entry)  # type: ignore[attr-defined]
        self.post_message(SessionReplied(outcome.ok, outcome.text))

    def on_session_replied(self, message: SessionReplied) -> None:
        self.notify(message.text, severity="information" if message.ok else "error", timeout=8)

    def action_focus_filter(self) -> None:
        self.query_one("#filter", Input).focus()

    def action_focus_table(self) -> None:
        self.query_one(DataTable).focus()

    def action_focus_detail(self) -> None:
        self.query_one("#detail-pane").focus()
