"""One line saying what the bridge is doing: service, listener, pending studies, outbox, last error."""

from __future__ import annotations

from rich.markup import escape
from textual.widgets import Static

from bridge.events import BridgeStatus


def describe(status: BridgeStatus) -> str:
    parts = []
    if status.owner_pid is not None or not status.service_alive:
        if not status.service_alive:
            return (f"[b red]service not running[/] (pid {status.owner_pid or '?'} gone) │ "
                    f"outbox: {status.outbox_waiting} waiting")
        parts.append(f"service pid {status.owner_pid}")
    if status.listening:
        parts.append(f"listening on port {status.port}")
    else:
        parts.append(f"[b red]not listening[/]: {escape(status.receiver_error or 'stopped')}")
    if status.pending:
        images = sum(p.images for p in status.pending)
        soonest = min(p.seconds_left for p in status.pending)
        parts.append(f"{len(status.pending)} pending ({images} images, next ZIP in {soonest:.0f} s)")
    else:
        parts.append("no studies pending")
    if status.outbox_note:
        parts.append(f"[b yellow]outbox: {escape(status.outbox_note)}[/]")
    else:
        parts.append(f"outbox: {status.outbox_waiting} waiting")
    parts += [f"[b red]{escape(note)}[/]" for note in status.worker_notes]
    if status.last_error:
        parts.append(f"[red]last error {escape(status.last_error)}[/]")
    return " │ ".join(parts)


class StatusBar(Static):
    """Always one line (cut with "…"); the full error text is in the Log Book's detail pane."""

    DEFAULT_CSS = """
    StatusBar { height: 1; background: $boost; padding: 0 1; text-wrap: nowrap; text-overflow: ellipsis; }
    """
