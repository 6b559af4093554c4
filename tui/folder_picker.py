"""A modal folder picker for the storage folder (typing the path works too)."""

from __future__ import annotations

from pathlib import Path

from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, DirectoryTree, Label


class FoldersOnly(DirectoryTree):
    def filter_paths(self, paths):  # noqa: ANN001, ANN201 - Textual's signature
        return [path for path in paths if path.is_dir()]


class FolderPicker(ModalScreen[Path | None]):
    """Dismisses with the chosen folder, or None when cancelled (Escape)."""

    BINDINGS = [("escape", "cancel", "Cancel")]
    DEFAULT_CSS = """
    FolderPicker { align: center middle; }
    FolderPicker > Vertical { width: 80%; height: 80%; border: thick $primary; background: $surface; }
    FolderPicker FoldersOnly { height: 1fr; }
    FolderPicker Horizontal { height: 1; }
    """

    def __init__(self, start: Path) -> None:
        super().__init__()
        self.start = start if start.is_dir() else Path.home()
        self.chosen = self.start

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label("Pick the storage folder (Enter opens a folder, Choose takes the highlighted one)")
            yield FoldersOnly(self.start, id="tree")
            with Horizontal():
                yield Button("Choose", id="choose", variant="primary", compact=True)
                yield Button("Cancel", id="cancel", compact=True)

    @on(DirectoryTree.DirectorySelected)
    def _remember(self, event: DirectoryTree.DirectorySelected) -> None:
        self.chosen = event.path

    @on(Button.Pressed, "#choose")
    def _choose(self) -> None:
        node = self.query_one(FoldersOnly).cursor_node
        if node is not None and node.data is not None:
            self.chosen = node.data.path
        self.dismiss(self.chosen)

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)
