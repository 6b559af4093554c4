"""Worker threads that cannot die silently: a crash is a log-book row (and so a mail), then a restart.

Each worker (zipper, outbox, notifier, janitor, config watcher) runs its loop through
:meth:`Supervisor.thread`. Its loop is meant to catch what it expects; anything that still
escapes, or a loop that returns while the bridge is not stopping, is written to the text log
with its traceback and to the log book as a FAILED service row (which the notifier mails), and
the loop is started again after a back-off (1 s, doubling, at most ``MAX_BACKOFF_SECONDS``).
The status line shows which workers were restarted.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from .logbook import FAILED, SERVICE, LogBook, LogEntry

log = logging.getLogger(__name__)

FIRST_BACKOFF_SECONDS = 1.0
MAX_BACKOFF_SECONDS = 300.0
CALM_SECONDS = 600.0  # a worker that ran this long since its last restart starts its back-off afresh


ThreadFactory = Callable[[str, Callable[[], None]], threading.Thread]


def plain_thread(name: str, loop: Callable[[], None]) -> threading.Thread:
    """A worker thread without supervision (tests and tools that run one worker alone)."""
    return threading.Thread(target=loop, name=name, daemon=True)


@dataclass(frozen=True)
class WorkerTrouble:
    """What the status line says about a worker that was restarted."""

    name: str
    restarts: int
    last_error: str
    restarting: bool  # waiting for its back-off right now


class Supervisor:
    """Runs worker loops on daemon threads and restarts them when they die."""

    def __init__(self, logbook: LogBook, stop: threading.Event, clock: Callable[[],
                 float] = time.monotonic) -> None:
        self.logbook = logbook
        self.stop = stop
        self.clock = clock
        self._troubles: dict[str, WorkerTrouble] = {}
        self._lock = threading.Lock()

    def thread(self, name: str, loop: Callable[[], None], stop: threading.Event | None = None) -> threading.Thread:
        """A (not yet started) thread running ``loop`` under supervision until ``stop`` is set."""
        stop = stop or self.stop
        return threading.Thread(target=self._supervise, args=(name, loop, stop), name=name, daemon=True)

    def troubles(self) -> tuple[WorkerTrouble, ...]:
        with self._lock:
            return tuple(self._troubles.values())

    def _supervise(self, name: str, loop: Callable[[], None], stop: threading.Event) -> None:
        backoff = FIRST_BACKOFF_SECONDS
        while not stop.is_set():
            started = self.clock()
            try:
                loop()
            except Exception as err:  # noqa: BLE001 - the point of a supervisor
                log.exception("worker %s died", name)
                why = f"{type(err).__name__}: {err}"
            else:
                if stop.is_set():
                    return
                why = "its loop ended unexpectedly"
            if self.clock() - started >= CALM_SECONDS:
                backoff = FIRST_BACKOFF_SECONDS
            self._died(name, why, backoff)
            if stop.wait(backoff):
                return
            self._restarted(name)
            backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)

    def _died(self, name: str, why: str, backoff: float) -> None:
        with self._lock:
            before = self._troubles.get(name)
            self._troubles[name] = WorkerTrouble(name, (before.restarts if before else 0) + 1, why, True)
        try:
            self.logbook.add(LogEntry(action=SERVICE, status=FAILED,
                                      detail=f"the {name} worker stopped unexpectedly ({why}); restarting it in "
                                             f"{backoff:.0f} s; details in dicombridge.log"))
        except Exception:  # noqa: BLE001 - the log book itself failing must not kill the supervisor
            log.exception("cannot write the log-book row for the %s worker", name)

    def _restarted(self, name: str) -> None:
        with self._lock:
            trouble = self._troubles[name]
            self._troubles[name] = WorkerTrouble(name, trouble.restarts, trouble.last_error, False)


def log_uncaught_thread_exceptions() -> None:
    """Threads outside supervision (pynetdicom's, helpers') log their tracebacks instead of printing them."""

    def hook(args: threading.ExceptHookArgs) -> None:
        name = args.thread.name if args.thread is not None else "?"
        log.error("uncaught exception in thread %s", name, exc_info=args.exc_value or True)

    threading.excepthook = hook
