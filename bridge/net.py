"""Socket tuning shared by the receiver and the sender."""

from __future__ import annotations

import logging
import socket

from pynetdicom import evt

log = logging.getLogger(__name__)


def disable_nagle(event: evt.Event) -> None:
    """EVT_CONN_OPEN handler: send small PDUs at once (pynetdicom leaves Nagle's algorithm on).

    With Nagle on, the tail of every C-STORE waits for the peer's delayed ACK: about 40 ms per
    image, 20 s for a 500-image study instead of a few seconds.
    """
    try:
        event.assoc.dul.socket.socket.setsockopt(  # type: ignore[union-attr]  # None is caught below
            socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except (AttributeError, OSError) as err:  # e.g. a socket already closed by the peer
        log.debug("cannot set TCP_NODELAY: %s", err)


NAGLE_OFF = (evt.EVT_CONN_OPEN, disable_nagle)
