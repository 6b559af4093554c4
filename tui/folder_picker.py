"""A modal folder picker for the storage folder (typing the path works too).

Any folder may be chosen, and the tree can go up to the parent folder; a folder inside the
current storage folder (e.g. its Inbox_Auto) is refused: the bridge would store into itself.
"""

from __future__ import annotations

from pathlib import Path

from rich.markup import escape
from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, DirectoryTree, Label, Static


class FoldersOnly(DirectoryTree):
    def filter_paths(self, paths):
        return [path for path in paths if path.is_dir()]


def inside_storage(folder: Path, storage: Path) -> bool:
    """True for a folder strictly inside ``storage`` (the storage folder itself is fine)."""
    try:
        folder, storage = folder.resolve(), storage.resolve()
    except OSError:
        return False
    return folder != storage and folder.is_relative_to(storage)


class FolderPicker(ModalScreen[Path | None]):
    """Dismisses with the chosen folder, or None when cancelled (Escape)."""

    BINDINGS = [("escape", "cancel", "Cancel"), ("backspace", "parent", "Parent folder")]
    DEFAULT_CSS = """
    FolderPicker { align: center middle; }
    FolderPicker > Vertical { width: 90%; height: 90%; border: thick $primary; background: $surface; }
    FolderPicker FoldersOnly { height: 1fr; }
    FolderPicker Horizontal { height: 1; }
    FolderPicker #picker-warning { height: auto; color: $error; }
    """

    def __init__(self, start: Path, storage: Path | None = None) -> None:
        super().__init__()
        self.start = start if start.is_dir() else Path.home()
        self.storage = storage
        self.chosen = self.start

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label("Pick the storage folder (Enter opens a folder, Backspace goes up, Choose takes the "
                        "highlighted one)")
            yield Static(escape(str(self.start)), id="picker-root")
            yield FoldersOnly(self.start, id="tree")
            yield Static("", id="picker-warning")
            with Horizontal():
                yield Button("Choose", id="choose", variant="primary", compact=True)
                yield Button("Parent ..", id="parent", compact=True)
                yield Button("Cancel", id="cancel", compact=True)

    @on(DirectoryTree.DirectorySelected)
    def _remember(self, event: DirectoryTree.DirectorySelected) -> None:
        self.chosen = event.path

    @on(Button.Pressed, "#parent")
    def action_parent(self) -> None:
        tree = self.query_one(FoldersOnly)
        root = Path(tree.path)
        if root.parent != root:
            tree.path = root.parent
            self.chosen = root.parent
            self.query_one("#picker-root", Static).update(escape(str(root.parent)))

    @on(Button.Pressed, "#choose")
    def _choose(self) -> None:
        node = self.query_one(FoldersOnly).cursor_node
        if node is not None and node.data is not None:
            self.chosen = node.data.path
        if self.storage is not None and inside_storage(self.chosen, self.storage):
            self.query_one("#picker-warning", Static).update(
                f"{escape(str(self.chosen))} is inside the current storage folder {escape(str(self.storage))}: "
                f"the bridge would store into its own folders. Pick a folder outside it.")
            return
        self.dismiss(self.chosen)

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)
