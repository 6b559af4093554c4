"""systemd's readiness protocol (sd_notify(3)): one datagram to ``$NOTIFY_SOCKET`` per state.

Written here rather than taken from PyPI: the protocol is a stable, documented one-liner; the
pure-Python library (``sdnotify``) has had no release since 2017, and the maintained ones
(``systemd-python``, ``cysystemd``) compile against libsystemd, which Windows has not.
Outside systemd (no ``$NOTIFY_SOCKET``, or Windows) every call does nothing.
"""

from __future__ import annotations

import os
import socket


def notify(*states: str) -> bool:
    """Send ``READY=1``, ``WATCHDOG=1``, ``STATUS=…`` lines; False when nobody listens."""
    address = os.environ.get("NOTIFY_SOCKET", "")
    family = getattr(socket, "AF_UNIX", None)
    if not address or family is None:
        return False
    if address.startswith("@"):  # Linux abstract namespace
        address = "\0" + address[1:]
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.sendto("\n".join(states).encode("utf-8"), address)
    except OSError:
        return False  # systemd gone (e.g. shutting down): nothing useful to do about it
    return True


def watchdog_interval() -> float | None:
    """Seconds systemd allows between keep-alives (``WatchdogSec=``), or None when not watched."""
    usec = os.environ.get("WATCHDOG_USEC", "")
    watched_pid = os.environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0 or (watched_pid and watched_pid != str(os.getpid())):
        return None
    return int(usec) / 1_000_000
