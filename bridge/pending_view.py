"""What the Pending view shows about each study still in the spool.

Patient and study from a study's first image, modality and recipient IDs from every image,
remembered per file. The receiver hands them over with its ``InstanceStored`` events (peeked as
each image streamed in): while a study arrives the view opens no file, which would cost 0.1-0.2 ms
of CPU per image in the receiving process (issue 12). A file nothing was handed for (pynetdicom's
path, an uncertain peek, files found in the spool at start-up) is read once. The sender also comes
from the ``InstanceStored`` events.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .aggregator import PendingStudy
from .crid import format_ids, merge_ids
from .events import BridgeEvent, InstanceStored, PendingInfo
from .instance import ImageFacts, read_image_facts
from .naming import display_date, display_patient_name, modality_field


@dataclass
class _Seen:
    """What was read so far from one spool folder."""

    patient_name: str = ""
    study_date: str = ""
    study_known: bool = False  # patient and study date were taken from one of the files
    read: set[Path] = field(default_factory=set)
    modalities: list[str] = field(default_factory=list)
    crids: list[tuple[str, ...]] = field(default_factory=list)


class PendingDescriber:
    """Turns the aggregator's pending studies into PendingInfo rows (thread-safe, cached)."""

    def __init__(self, crid_tag: Callable[[], int | None]) -> None:
        self._crid_tag = crid_tag
        self._seen: dict[Path, _Seen] = {}
        self._senders: dict[str, str] = {}
        self._handed: dict[str, dict[Path, ImageFacts]] = {}  # study key -> file -> facts not yet taken
        self._lock = threading.Lock()
        self.files_read = 0  # files opened because nothing was handed (tests count them)

    def consider(self, event: BridgeEvent) -> None:
        """Bus subscriber: remember who sent each study (the last association wins) and what each image holds."""
        if not isinstance(event, InstanceStored):
            return
        with self._lock:
            if event.sender:
                self._senders[event.study_key] = event.sender
            if event.facts is not None and event.file:
                self._handed.setdefault(event.study_key, {})[Path(event.file)] = event.facts

    def describe(self, studies: list[PendingStudy], timeout: float, now: float) -> tuple[PendingInfo, ...]:
        with self._lock:
            folders = {study.folder for study in studies}
            for gone in set(self._seen) - folders:
                del self._seen[gone]
            keys = {study.key for study in studies}
            for key in set(self._senders) - keys:
                del self._senders[key]
            for key in set(self._handed) - keys:
                del self._handed[key]
            return tuple(self._describe(study, timeout, now) for study in studies)

    def _describe(self, study: PendingStudy, timeout: float, now: float) -> PendingInfo:
        seen = self._seen.setdefault(study.folder, _Seen())
        handed = self._handed.get(study.key, {})
        crid_tag = self._crid_tag()
        for path in sorted(study.files.values()):
            if path in seen.read:
                continue
            seen.read.add(path)
            facts = handed.pop(path, None)
            if facts is None or facts.crid_tag != crid_tag or (facts.patient_name is None and not seen.study_known):
                try:
                    facts = read_image_facts(path, crid_tag, with_study=not seen.study_known)
                except Exception:  # noqa: BLE001 - the zipper reports unreadable files; the view just skips them
                    continue
                finally:
                    self.files_read += 1
            if facts.patient_name is not None and not seen.study_known:
                seen.patient_name = display_patient_name(facts.patient_name)
                seen.study_date = display_date(facts.study_date)
                seen.study_known = True
            seen.modalities.append(facts.modality)
            if facts.crid is not None:
                seen.crids.append(facts.crid.ids)
        return PendingInfo(key=study.key, images=study.image_count,
                           seconds_left=float(round(max(0.0, study.due_at(timeout) - now))),
                           patient_name=seen.patient_name, study_date=seen.study_date,
                           modality=modality_field(tuple(seen.modalities)),
                           crids=format_ids(merge_ids(seen.crids)), sender=self._senders.get(study.key, ""))
