"""Pending: the studies in the spool, live — who they are, how many images, when they are zipped."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Static

from bridge.events import BridgeStatus

from .status_bar import StatusBar

COLUMNS = (("Patient", 22), ("Study Date", 10), ("Mod.", 6), ("Images", 6), ("Zip in", 7), ("From", 22),
           ("Recipient IDs so far", 44))


class PendingScreen(Screen):
    AUTO_FOCUS = "#pending"

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("", id="pending-title")
        yield DataTable(id="pending", cursor_type="row", zebra_stripes=True)
        yield StatusBar(id="status")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        for label, width in COLUMNS:
            table.add_column(label, width=width)
        status = self.app.status  # type: ignore[attr-defined]
        if status is not None:
            self.show(status)

    def on_screen_resume(self) -> None:
        self.app.refresh_status()  # type: ignore[attr-defined]

    def show(self, status: BridgeStatus) -> None:
        table = self.query_one(DataTable)
        with self.app.batch_update():
            table.clear()
            for study in status.pending:
                ids = study.crids or "none yet (Inbox_Manual if none come)"
                table.add_row(*(Text(value, no_wrap=True, overflow="ellipsis") for value in (
                    study.patient_name or "?", study.study_date, study.modality, str(study.images),
                    f"{study.seconds_left:.0f} s", study.sender, ids)), key=study.key + str(id(study)))
        count = len(status.pending)
        self.query_one("#pending-title", Static).update(
            f"[b]{count} {'study' if count == 1 else 'studies'} pending[/]: zipped once no image came for the "
            f"quiet time (receive.timeout_seconds)" if count else
            "[b]No studies pending.[/] A study appears here while its images arrive.")
