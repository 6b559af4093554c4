"""Save / Discard / Cancel, asked before unsaved settings would be lost (quit, reset)."""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Label


class UnsavedPrompt(ModalScreen[str | None]):
    """Dismisses with "save", "discard" or None (Cancel, Escape)."""

    BINDINGS = [("escape", "cancel", "Cancel"), ("s", "choose('save')", "Save"),
                ("d", "choose('discard')", "Discard")]
    DEFAULT_CSS = """
    UnsavedPrompt { align: center middle; }
    UnsavedPrompt > Vertical { width: 60; max-width: 95%; height: auto; border: thick $warning;
                               background: $surface; padding: 1 2; }
    UnsavedPrompt Label { width: 1fr; }
    UnsavedPrompt Horizontal { height: auto; margin-top: 1; }
    UnsavedPrompt Button { margin-right: 2; }
    """

    def __init__(self, doing: str) -> None:
        super().__init__()
        self.doing = doing

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(f"The settings have unsaved changes. Save them before {self.doing}?")
            with Horizontal():
                yield Button("Save", id="save", variant="primary", compact=True)
                yield Button("Discard", id="discard", variant="error", compact=True)
                yield Button("Cancel", id="cancel", compact=True)

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        self.dismiss(None if event.button.id == "cancel" else event.button.id)

    def action_choose(self, choice: str) -> None:
        self.dismiss(choice)

    def action_cancel(self) -> None:
        self.dismiss(None)
