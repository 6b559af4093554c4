"""Heartbeats of the engine's long-running loops, for the service manager's watchdog.

Each loop ticks every time round (and while it works through a long job), so a loop that
stopped ticking is stuck: a deadlock, a hung disk, a call that never returns. The headless
runner sends systemd its keep-alive only while every loop ticked recently; a stuck bridge is
then restarted instead of silently receiving nothing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class Liveness:
    """Last tick of each named loop (monotonic seconds)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._since = clock()  # a loop that never ticked is counted from here
        self._last: dict[str, float] = {}
        self._lock = threading.Lock()

    def tick(self, loop: str) -> None:
        with self._lock:
            self._last[loop] = self._clock()

    def stuck(self, loops: list[str], max_age_seconds: float) -> list[str]:
        """Those of ``loops`` that did not tick for ``max_age_seconds``, each with how long."""
        now = self._clock()
        with self._lock:
            ages = {loop: now - self._last.get(loop, self._since) for loop in loops}
        return [f"{loop} (no sign of life for {age:.0f} s)" for loop, age in ages.items() if age > max_age_seconds]
