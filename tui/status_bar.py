"""One line saying what the bridge is doing: listener, pending studies, outbox, last error."""

from __future__ import annotations

from rich.markup import escape
from textual.widgets import Static

from bridge.events import BridgeStatus

ERROR_CHARS = 60  # the full text is in the Log Book's detail panel


def describe(status: BridgeStatus, last_error: str) -> str:
    if status.owner_pid is not None:
        receiver = f"attached to the service (pid {status.owner_pid})"
    elif status.listening:
        receiver = f"listening on port {status.port}"
    else:
        receiver = f"[b red]not listening[/]: {escape(status.receiver_error or 'stopped')}"
    if status.pending:
        images = sum(p.images for p in status.pending)
        soonest = min(p.seconds_left for p in status.pending)
        pending = f"{len(status.pending)} pending ({images} images, next ZIP in {soonest:.0f} s)"
    else:
        pending = "no studies pending"
    outbox = f"outbox: {status.outbox_waiting} waiting"
    if status.outbox_note:
        outbox = f"[b yellow]outbox: {escape(status.outbox_note)}[/]"
    parts = [receiver, pending, outbox]
    parts += [f"[b red]{escape(note)}[/]" for note in status.worker_notes]
    if last_error:
        short = last_error if len(last_error) <= ERROR_CHARS else last_error[: ERROR_CHARS - 1] + "…"
        parts.append(f"[red]last error: {escape(short)}[/]")
    return " │ ".join(parts)


class StatusBar(Static):
    """Refreshed by the app every second (the snapshot is cheap)."""

    DEFAULT_CSS = """
    StatusBar { height: auto; max-height: 3; background: $boost; padding: 0 1; }
    """
