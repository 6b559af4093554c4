"""What the Pending view shows about each study still in the spool.

Read from the spool files themselves (patient and study from the first image, recipient IDs
from every image) and remembered per file, so a status every second reads only new arrivals.
The sender comes from the receiver's ``InstanceStored`` events.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .aggregator import PendingStudy
from .crid import format_ids, merge_ids
from .events import BridgeEvent, InstanceStored, PendingInfo
from .instance import read_instance, read_study_record
from .naming import display_date, display_patient_name, modality_field


@dataclass
class _Seen:
    """What was read so far from one spool folder."""

    patient_name: str = ""
    study_date: str = ""
    read: set[Path] = field(default_factory=set)
    modalities: list[str] = field(default_factory=list)
    crids: list[tuple[str, ...]] = field(default_factory=list)


class PendingDescriber:
    """Turns the aggregator's pending studies into PendingInfo rows (thread-safe, cached)."""

    def __init__(self, crid_tag: Callable[[], int | None]) -> None:
        self._crid_tag = crid_tag
        self._seen: dict[Path, _Seen] = {}
        self._senders: dict[str, str] = {}
        self._lock = threading.Lock()

    def consider(self, event: BridgeEvent) -> None:
        """Bus subscriber: remember who sent each study (the last association wins)."""
        if isinstance(event, InstanceStored) and event.sender:
            with self._lock:
                self._senders[event.study_key] = event.sender

    def describe(self, studies: list[PendingStudy], timeout: float, now: float) -> tuple[PendingInfo, ...]:
        with self._lock:
            folders = {study.folder for study in studies}
            for gone in set(self._seen) - folders:
                del self._seen[gone]
            keys = {study.key for study in studies}
            for key in set(self._senders) - keys:
                del self._senders[key]
            return tuple(self._describe(study, timeout, now) for study in studies)

    def _describe(self, study: PendingStudy, timeout: float, now: float) -> PendingInfo:
        seen = self._seen.setdefault(study.folder, _Seen())
        files = sorted(study.files.values())
        for path in files:
            if path in seen.read:
                continue
            try:
                header = read_instance(path, self._crid_tag())
                if not seen.read:
                    fields = read_study_record(path)
                    seen.patient_name = display_patient_name(fields.patient_name)
                    seen.study_date = display_date(fields.study_date)
            except Exception:  # noqa: BLE001 - the zipper reports unreadable files; the view just skips them
                seen.read.add(path)
                continue
            seen.read.add(path)
            seen.modalities.append(header.modality)
            if header.crid is not None:
                seen.crids.append(header.crid.ids)
        return PendingInfo(key=study.key, images=study.image_count,
                           seconds_left=float(round(max(0.0, study.due_at(timeout) - now))),
                           patient_name=seen.patient_name, study_date=seen.study_date,
                           modality=modality_field(tuple(seen.modalities)),
                           crids=format_ids(merge_ids(seen.crids)), sender=self._senders.get(study.key, ""))
