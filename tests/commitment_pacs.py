"""A storage-commitment PACS that misbehaves on purpose: never reports, or reports failures.

It stores every image (C-STORE success, counted per SOP instance), answers N-ACTION with
success, and then, as ``policy`` decides per request, reports on a new association to the
bridge's receiver (as Orthanc does): ``policy(asked_count, instance_uids)`` returns None for
"never report", or the failed instances with their Failure Reason (-1: left out of the report).
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable

from pydicom.dataset import Dataset
from pynetdicom import AE, AllStoragePresentationContexts, build_role, evt
from pynetdicom.sop_class import StorageCommitmentPushModel, Verification  # type: ignore[attr-defined]

from bridge.commitment import EVENT_ALL_COMMITTED, EVENT_SOME_FAILED, WELL_KNOWN_INSTANCE

from .conftest import free_port

ReportPolicy = Callable[[int, list[str]], "dict[str, int] | None"]


class CommitmentPacs:
    aet = "COMMITPACS"

    def __init__(self, report_port: int | None, policy: ReportPolicy) -> None:
        """``report_port`` None: report on the N-ACTION's own association instead of a new one."""
        self.port = free_port()
        self.report_port = report_port
        self.policy = policy
        self.stored: Counter[str] = Counter()  # SOP instance -> C-STOREs answered with success
        self.asked: list[list[str]] = []  # the instances of each N-ACTION, in order
        self.reported: list[dict[str, int]] = []  # failures of each report sent
        self.changed = threading.Condition()
        ae = AE(ae_title=self.aet)
        ae.supported_contexts = AllStoragePresentationContexts
        ae.add_supported_context(Verification)
        ae.add_supported_context(StorageCommitmentPushModel)
        self.server = ae.start_server(("127.0.0.1", self.port), block=False,
                                      evt_handlers=[(evt.EVT_C_STORE, self._store), (evt.EVT_N_ACTION, self._action)])

    def _store(self, event: evt.Event) -> int:
        with self.changed:
            self.stored[str(event.request.AffectedSOPInstanceUID)] += 1
        return 0x0000

    def _action(self, event: evt.Event) -> tuple[int, None]:
        request = event.action_information
        instances = [(str(item.ReferencedSOPClassUID), str(item.ReferencedSOPInstanceUID))
                     for item in request.ReferencedSOPSequence]
        with self.changed:
            self.asked.append([uid for _, uid in instances])
            failures = self.policy(len(self.asked), [uid for _, uid in instances])
            self.changed.notify_all()
        if failures is not None:  # after the N-ACTION answer, on an association of its own
            threading.Thread(target=self._report, args=(str(request.TransactionUID), instances, failures,
                                                        event.assoc), daemon=True).start()
        return 0x0000, None

    def _report(self, transaction: str, instances: list[tuple[str, str]], failures: dict[str, int],
                asking) -> None:  # noqa: ANN001 - the N-ACTION's pynetdicom Association
        report = Dataset()
        report.TransactionUID = transaction
        report.ReferencedSOPSequence = [_reference(cls, uid) for cls, uid in instances if uid not in failures]
        if failures:
            report.FailedSOPSequence = [_reference(cls, uid, failures[uid]) for cls, uid in instances
                                        if failures.get(uid, -1) >= 0]
        event_type = EVENT_SOME_FAILED if failures else EVENT_ALL_COMMITTED
        if self.report_port is None:
            asking.send_n_event_report(report, event_type, StorageCommitmentPushModel, WELL_KNOWN_INSTANCE)
            self._reported(failures)
            return
        ae = AE(ae_title=self.aet)
        ae.add_requested_context(StorageCommitmentPushModel)
        assoc = ae.associate("127.0.0.1", self.report_port, ae_title="ANY",
                             ext_neg=[build_role(StorageCommitmentPushModel, scp_role=True)])
        if not assoc.is_established:
            return
        try:
            assoc.send_n_event_report(report, event_type, StorageCommitmentPushModel, WELL_KNOWN_INSTANCE)
        finally:
            assoc.release()
        self._reported(failures)

    def _reported(self, failures: dict[str, int]) -> None:
        with self.changed:
            self.reported.append(failures)
            self.changed.notify_all()

    def wait_asked(self, count: int, timeout: float = 60) -> None:
        with self.changed:
            if not self.changed.wait_for(lambda: len(self.asked) >= count, timeout):
                raise TimeoutError(f"fewer than {count} N-ACTION requests within {timeout} s")

    def stop(self) -> None:
        self.server.shutdown()


def _reference(sop_class: str, sop_instance: str, failure: int | None = None) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = sop_class
    item.ReferencedSOPInstanceUID = sop_instance
    if failure is not None:
        item.FailureReason = failure
    return item
