"""Storage commitment (Push Model, as SCU): the PACS confirms it has the images we sent.

C-STORE success only says the PACS received an image. With storage commitment the bridge asks
the PACS (N-ACTION, Storage Commitment Push Model) to take responsibility for a list of SOP
instances; the PACS answers later with an N-EVENT-REPORT — on the same association if it is
still open, or, as Orthanc and most PACS do, on a new association it opens to our receiver.
The ZIP is deleted only after that report says every image is committed.

A :class:`CommitmentLedger` joins the two sides: the sender opens a transaction and waits; the
receiver (or the sender's own association) hands in the report. Nothing is kept across a
restart: the ZIP is still in ``.bridge/outbox``, so it is sent again and committed again.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE, evt
from pynetdicom.sop_class import StorageCommitmentPushModel  # type: ignore[attr-defined]

from .net import NAGLE_OFF
from .sender import PacsTarget
from .sender import _describe_failed_association as describe_failed_association

log = logging.getLogger(__name__)

WELL_KNOWN_INSTANCE = "1.2.840.10008.1.20.1.1"  # PS3.4 J.3.5: the Storage Commitment Push Model SOP Instance
ACTION_REQUEST_COMMIT = 1
EVENT_ALL_COMMITTED, EVENT_SOME_FAILED = 1, 2
STATUS_SUCCESS = 0x0000
STATUS_PROCESSING_FAILURE = 0x0110

# PS3.3 C.14.1.1 Failure Reason values, for the log book.
FAILURE_REASONS = {
    0x0110: "processing failure", 0x0112: "no such object instance", 0x0213: "resource limitation",
    0x0122: "referenced SOP class not supported", 0x0119: "class/instance conflict",
    0x0131: "duplicate transaction UID",
}


class CommitmentError(RuntimeError):
    """The commitment request could not be made (no association, refused N-ACTION).

    ``transient``: the PACS could not be reached (worth another try later), as opposed to a PACS
    that does not support storage commitment or refuses the request.
    """

    def __init__(self, message: str, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


@dataclass(frozen=True)
class CommitmentResult:
    """What the PACS reported for one transaction."""

    transaction_uid: str
    committed: frozenset[str]
    failed: dict[str, str] = field(default_factory=dict)  # SOP Instance UID -> reason in words

    def missing(self, requested: set[str]) -> set[str]:
        """Instances we asked about that the report neither committed nor failed."""
        return requested - self.committed - set(self.failed)


class CommitmentLedger:
    """Open transactions and the reports that came in for them (thread-safe)."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._open: set[str] = set()
        self._results: dict[str, CommitmentResult] = {}

    def open(self, transaction_uid: str) -> None:
        with self._changed:
            self._open.add(transaction_uid)

    def close(self, transaction_uid: str) -> None:
        with self._changed:
            self._open.discard(transaction_uid)
            self._results.pop(transaction_uid, None)

    def deliver(self, result: CommitmentResult) -> bool:
        """A report arrived; False when nobody waits for that transaction (a stale one)."""
        with self._changed:
            if result.transaction_uid not in self._open:
                return False
            self._results[result.transaction_uid] = result
            self._changed.notify_all()
            return True

    def wait(self, transaction_uid: str, timeout_seconds: float, stop: threading.Event | None = None,
             poll_seconds: float = 1.0) -> CommitmentResult | None:
        """The report, or None when it did not come in time (or ``stop`` was set)."""
        deadline = time.monotonic() + timeout_seconds
        with self._changed:
            while transaction_uid not in self._results:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (stop is not None and stop.is_set()):
                    return None
                self._changed.wait(min(remaining, poll_seconds))  # wakes on a report; polls only for stop
            return self._results[transaction_uid]

    def handle_event_report(self, event: evt.Event) -> tuple[int, Dataset | None]:
        """pynetdicom's EVT_N_EVENT_REPORT handler, for the receiver and the sender's association."""
        request = event.request
        if request.AffectedSOPClassUID != StorageCommitmentPushModel:
            return STATUS_PROCESSING_FAILURE, None
        try:
            result = result_from_report(event.event_information)
        except (AttributeError, KeyError, ValueError) as err:
            log.warning("storage commitment report from %s is malformed: %s", event.assoc.requestor.ae_title, err)
            return STATUS_PROCESSING_FAILURE, None
        if not self.deliver(result):
            log.info("storage commitment report for unknown transaction %s ignored", result.transaction_uid)
        return STATUS_SUCCESS, None


def result_from_report(report: Dataset) -> CommitmentResult:
    """Read an N-EVENT-REPORT's Event Information (PS3.4 J.3.3.1)."""
    committed = frozenset(str(item.ReferencedSOPInstanceUID) for item in report.get("ReferencedSOPSequence", []))
    failed = {}
    for item in report.get("FailedSOPSequence", []):
        reason = int(item.get("FailureReason", STATUS_PROCESSING_FAILURE))
        failed[str(item.ReferencedSOPInstanceUID)] = f"0x{reason:04X} {FAILURE_REASONS.get(reason, 'failure')}"
    return CommitmentResult(str(report.TransactionUID), committed, failed)


def action_information(transaction_uid: str, instances: list[tuple[str, str]]) -> Dataset:
    """The N-ACTION's dataset: the transaction and every (SOP class, SOP instance) to commit."""
    action = Dataset()
    action.TransactionUID = transaction_uid
    references = []
    for sop_class, sop_instance in instances:
        item = Dataset()
        item.ReferencedSOPClassUID = sop_class
        item.ReferencedSOPInstanceUID = sop_instance
        references.append(item)
    action.ReferencedSOPSequence = references
    return action


def request_commitment(target: PacsTarget, instances: list[tuple[str, str]], ledger: CommitmentLedger,
                       report_wait_seconds: float = 5.0, stop: threading.Event | None = None) -> str:
    """Ask the PACS to commit ``instances``; returns the transaction UID to wait for in ``ledger``.

    The association stays open ``report_wait_seconds`` after the N-ACTION answer, for a PACS that
    reports on it; a PACS that reports on a new association reaches the receiver instead.
    """
    transaction_uid = generate_uid()
    ledger.open(transaction_uid)
    ae = AE(ae_title=target.calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = target.network_timeout_seconds
    ae.add_requested_context(StorageCommitmentPushModel)
    assoc = ae.associate(target.host, target.port, ae_title=target.called_ae, tls_args=target.tls_args,
                         evt_handlers=[NAGLE_OFF, (evt.EVT_N_EVENT_REPORT, ledger.handle_event_report)])
    if not assoc.is_established:
        ledger.close(transaction_uid)
        if assoc.rejected_contexts:  # the association was accepted, the Push Model was not
            raise CommitmentError("the PACS does not support storage commitment (it refused the Push Model "
                                  "presentation context)")
        _failure, why = describe_failed_association(assoc, target)
        raise CommitmentError(f"cannot ask for storage commitment: {why}", transient=True)
    try:
        status, _reply = assoc.send_n_action(action_information(transaction_uid, instances), ACTION_REQUEST_COMMIT,
                                             StorageCommitmentPushModel, WELL_KNOWN_INSTANCE)
        code = int(status.get("Status", -1)) if status else -1
        if code != STATUS_SUCCESS:
            raise CommitmentError("the PACS refused the storage commitment request "
                                  + (f"(status 0x{code:04X})" if code >= 0 else "(no answer)"))
        ledger.wait(transaction_uid, report_wait_seconds, stop)  # a report on this association, if the PACS sends one
    except CommitmentError:
        ledger.close(transaction_uid)
        raise
    finally:
        if assoc.is_established:
            assoc.release()
    return transaction_uid


def accept_reports(ae: AE) -> None:
    """Let a receiving AE take N-EVENT-REPORTs from a PACS that opens its own association for them.

    The PACS proposes the Push Model with itself in the SCP role (role selection): accept that.
    """
    ae.add_supported_context(StorageCommitmentPushModel, scu_role=True, scp_role=True)
