"""Turn one pending study into one ZIP in the right inbox (README "What happens to a study", "ZIP names").

The ZIP is written in ``.bridge/staging`` and flushed to disk, then linked into the inbox
under a name nobody else has, and only then is the study's spool folder deleted: at no moment
is a half-written ZIP visible, and at no moment is there no durable copy of the study.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import uuid
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from .aggregator import PendingStudy, safe_key, spool_key
from .crid import MAX_IDS, PrefixWatch, format_ids, merge_ids
from .dicom_patch import dataset_offset, splice_deflated, splice_file
from .instance import InstanceHeader, read_instance, read_study_record
from .layout import StorageLayout, fsync_path, is_disk_full_error, link_without_overwrite
from .naming import file_safe, zip_name
from .study_record import StudyRecord

log = logging.getLogger(__name__)

MAX_CLASH_NUMBER = 10_000


class ZippingAborted(RuntimeError):
    """The bridge is stopping; the study stays in the spool and is zipped after the restart."""


@dataclass(frozen=True)
class StudySummary:
    """The study's record (what the ZIP name, the log book and the mails say) and why it needs a person."""

    record: StudyRecord
    warnings: tuple[str, ...]

    @property
    def crids(self) -> tuple[str, ...]:
        return self.record.crids

    @property
    def image_count(self) -> int:
        return self.record.image_count


@dataclass(frozen=True)
class ZipOutcome:
    target: Path
    summary: StudySummary


def summarize(headers: list[InstanceHeader], first: StudyRecord) -> StudySummary:
    """Study fields from the first image; recipient IDs merged over all images (README "What happens to a study").

    The study routes to Inbox_Auto only when every image's recipient-ID text was clean and
    the study has at most five distinct IDs; otherwise it goes to Inbox_Manual with a warning
    (the IDs are stripped from every file either way).
    """
    warnings: list[str] = []
    id_lists = [h.crid.ids for h in headers if h.crid is not None and h.crid.ids]
    malformed = sorted({h.crid.malformed for h in headers if h.crid is not None and h.crid.malformed})
    if malformed:
        warnings.append("malformed recipient-ID text removed, study needs manual forwarding: " + "; ".join(malformed))
    if len(set(id_lists)) > 1:
        warnings.append("images of this study carry different recipient IDs: " +
                        ", ".join(sorted({format_ids(ids) for ids in id_lists})))
    merged = merge_ids(id_lists)
    if len(merged) > MAX_IDS:
        warnings.append(f"{len(merged)} distinct recipient IDs in this study, at most {MAX_IDS} allowed: "
                        "IDs removed, study needs manual forwarding")
    study_uids = {h.study_uid for h in headers}
    if len(study_uids) > 1:
        raise ValueError(f"files of different studies in one spool folder: {sorted(study_uids)}")
    crids = () if malformed or len(merged) > MAX_IDS else merged
    record = replace(first, study_uid=headers[0].study_uid, modalities=tuple(h.modality for h in headers),
                     crids=crids)
    return StudySummary(record=record, warnings=tuple(warnings))


def member_names(headers: list[InstanceHeader]) -> list[str]:
    """``<series>/<SOP key>.dcm`` per file, the SOP key being the one its spool file is stored under
    (the dataset's SOP Instance UID; ``<uid>-2`` for a second, different file with that UID), so
    every acknowledged image has a member of its own. Names that would still repeat get ``-2``…"""
    names: list[str] = []
    taken: set[str] = set()
    for header in headers:
        stem = f"{safe_key(header.series_uid or 'series')}/{spool_key(header.path)}"
        name, number = f"{stem}.dcm", 1
        while name in taken:
            number += 1
            name = f"{stem}-{number}.dcm"
        taken.add(name)
        names.append(name)
    return names


def _write_member(archive: zipfile.ZipFile, header: InstanceHeader, name: str) -> str:
    """Add one file, stripping its recipient-ID text without touching any other byte.

    Returns where ``CRID#`` text is still in the member's bytes (outside the element the IDs
    were cut from: another element, a sequence item), else an empty string. Deflated datasets
    are not looked into.
    """
    compress = zipfile.ZIP_STORED if header.pixel_data_compressed else zipfile.ZIP_DEFLATED
    info = zipfile.ZipInfo.from_file(header.path, name)
    info.compress_type = compress
    span, crid = header.crid_span, header.crid
    with open(header.path, "rb") as source, archive.open(info, "w", force_zip64=True) as member:
        watch = PrefixWatch(member)
        if span is None or crid is None or not crid.found_suffix:
            shutil.copyfileobj(source, watch, 1024 * 1024)
        elif header.deflated:
            splice_deflated(source, member, span, crid.kept, dataset_offset(source))
        else:
            splice_file(source, watch, span, crid.kept)
    if watch.found_at is None or header.deflated:
        return ""
    return f"{info.filename} at byte {watch.found_at}"


def _with_leftovers(summary: StudySummary, leftovers: list[str]) -> StudySummary:
    """A study whose files still hold ``CRID#`` text goes to Inbox_Manual, with the first place named."""
    if not leftovers:
        return summary
    warning = (f"'CRID#' text outside the recipient-ID element in {len(leftovers)} of {summary.image_count} "
               f"files (first: {leftovers[0]}), not removed: check the files before forwarding")
    return StudySummary(record=replace(summary.record, crids=()), warnings=(*summary.warnings, warning))


def place_without_clash(source: Path, folder: Path, record: StudyRecord) -> Path:
    """Link ``source`` into ``folder`` under the first free name (``-2``, ``-3``… on the UID)."""
    for number in range(1, MAX_CLASH_NUMBER):
        target = folder / zip_name(record, number)
        if link_without_overwrite(source, target):
            return target
    raise FileExistsError(f"more than {MAX_CLASH_NUMBER} ZIPs named like {zip_name(record)} in {folder}")


def _start_writeback(archive: zipfile.ZipFile) -> None:
    """Ask the OS to start writing the ZIP to disk now, so the final fsync has little left."""
    if hasattr(os, "posix_fadvise") and archive.fp is not None:
        archive.fp.flush()
        os.posix_fadvise(archive.fp.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)


class Zipper:
    """Zips claimed studies; ``stop`` makes a running zip give up and leave the spool intact."""

    def __init__(self, layout: StorageLayout, crid_tag: Callable[[], int | None], stop: threading.Event | None = None,
                 progress: Callable[[], None] = lambda: None) -> None:
        """``crid_tag`` gives the recipient-ID element in force (receive.crid_tag_*), read per study."""
        self.layout = layout
        self.crid_tag = crid_tag
        self.stop = stop or threading.Event()
        self.progress = progress  # called per image: a long zip is not mistaken for a hung one

    def read_headers(self, study: PendingStudy) -> list[InstanceHeader]:
        files = sorted(study.folder.glob("*.dcm"))  # names start with the arrival number
        crid_tag = self.crid_tag()  # one tag for the whole study, even when the settings change meanwhile
        headers = []
        for path in files:
            try:
                headers.append(read_instance(path, crid_tag))
            except Exception as err:  # noqa: BLE001 - any unreadable file fails the study visibly
                raise ValueError(f"cannot read {path.name}: {err}") from err
        return headers

    def zip_study(self, study: PendingStudy) -> ZipOutcome:
        """Write the ZIP and move it into Inbox_Auto or Inbox_Manual; raise on any failure."""
        headers = self.read_headers(study)
        if not headers:
            raise ValueError("the study folder holds no images")
        summary = summarize(headers, read_study_record(headers[0].path))
        staging = self.layout.staging / f"{uuid.uuid4().hex}.zip.part"
        leftovers: list[str] = []
        try:
            with zipfile.ZipFile(staging, "w", zipfile.ZIP_DEFLATED, allowZip64=True) as archive:
                for header, name in zip(headers, member_names(headers), strict=True):
                    if self.stop.is_set():
                        raise ZippingAborted("bridge stopping")
                    self.progress()
                    leftovers.append(_write_member(archive, header, name))
                    _start_writeback(archive)
            fsync_path(staging)
            summary = _with_leftovers(summary, [text for text in leftovers if text])
            inbox = self.layout.inbox_auto if summary.crids else self.layout.inbox_manual
            target = place_without_clash(staging, inbox, summary.record)
            fsync_path(inbox)
        finally:
            staging.unlink(missing_ok=True)
        return ZipOutcome(target=target, summary=summary)

    def move_to_failed(self, study: PendingStudy, reason: str) -> Path:
        """Keep the received files, as received, in Inbox_Failed with a reason.txt beside them."""
        parts: StudyRecord | None
        try:
            headers = self.read_headers(study)
            parts = summarize(headers, read_study_record(headers[0].path)).record
        except Exception:  # noqa: BLE001 - unreadable study: fall back to the spool key
            parts = None
        for number in range(1, MAX_CLASH_NUMBER):
            # named like its ZIP would be (clash number on the UID, so the name always fits)
            name = zip_name(parts, number)[: -len(".zip")] if parts else file_safe(study.key)
            target = self.layout.inbox_failed / (name if parts or number == 1 else f"{name}-{number}")
            if not target.exists():  # a rename onto an existing empty folder would succeed
                os.rename(study.folder, target)
                break
        else:
            raise FileExistsError(f"no free name in Inbox_Failed for {target.name}")
        (target / "reason.txt").write_text(reason.rstrip() + "\n", encoding="utf-8")
        fsync_path(self.layout.inbox_failed)
        return target


def is_transient(err: BaseException) -> bool:
    """Disk full is worth a retry; anything else will fail the same way next time."""
    return isinstance(err, OSError) and is_disk_full_error(err)

