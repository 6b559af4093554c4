"""A PACS written to misbehave on purpose: answers chosen statuses, counts every C-STORE.

Built on pynetdicom's SCP (the real PACS tests use Orthanc and DCMTK); ``statuses`` maps the
n-th C-STORE request of an instance (1, 2, …) to the status to answer, so "0xA700 the first
time, then success" or "0xC000 always" are one line in a test.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable

from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from .conftest import free_port

StatusRule = Callable[[str, int], int]  # (SOP instance UID, how many times it was sent) -> status


class MisbehavingPacs:
    aet = "BADPACS"

    def __init__(self, rule: StatusRule = lambda uid, n: 0x0000) -> None:
        self.port = free_port()
        self.rule = rule
        self.requests: Counter[str] = Counter()  # SOP instance -> C-STORE requests seen
        self.stored: Counter[str] = Counter()  # SOP instance -> answered with success
        self.changed = threading.Condition()
        ae = AE(ae_title=self.aet)
        ae.supported_contexts = AllStoragePresentationContexts
        ae.add_supported_context(Verification)
        self.server = ae.start_server(("127.0.0.1", self.port), block=False,
                                      evt_handlers=[(evt.EVT_C_STORE, self._store)])

    def _store(self, event: evt.Event) -> int:
        uid = str(event.request.AffectedSOPInstanceUID)
        with self.changed:
            self.requests[uid] += 1
            seen = self.requests[uid]
            self.changed.notify_all()
        status = self.rule(uid, seen)  # outside the lock: a rule may stall this one association
        if status == 0x0000:
            with self.changed:
                self.stored[uid] += 1
        return status

    def wait_requests(self, count: int, timeout: float = 60) -> None:
        with self.changed:
            if not self.changed.wait_for(lambda: sum(self.requests.values()) >= count, timeout):
                raise TimeoutError(f"fewer than {count} C-STORE requests within {timeout} s")

    def stop(self) -> None:
        self.server.shutdown()
