"""Unpack a ZIP from the outbox without trusting it.

Entry names are never used as paths: every member is written to ``<work>/<n>.dcm``, so no
name can escape the work folder; names that try (absolute, ``..``, drive letters) or links
still fail the whole ZIP, because such a ZIP did not come from the messaging app. Sizes are
counted while writing, not taken from the headers (zip bombs lie about them).
"""

from __future__ import annotations

import stat
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath

MAX_ENTRIES = 50_000
MAX_TOTAL_BYTES = 16 * 1024**3
MAX_RATIO = 200  # uncompressed / compressed; DICOM deflates 2-5x, a bomb 1000x+
CHUNK = 1024 * 1024


class ZipRejected(ValueError):
    """The ZIP is unsafe or unreadable; the message says why (it goes into the reason file)."""


@dataclass
class Unpacked:
    dicom_files: list[Path] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # "name: why", for the log book


def _unsafe_name(name: str) -> str | None:
    for pure in (PurePosixPath(name), PureWindowsPath(name)):
        if pure.is_absolute() or pure.drive or pure.root:
            return "absolute path"
        if ".." in pure.parts:
            return "'..' in the path"
    return None


def _is_link(info: zipfile.ZipInfo) -> bool:
    return info.create_system == 3 and stat.S_ISLNK(info.external_attr >> 16)


def check_entries(archive: zipfile.ZipFile) -> list[zipfile.ZipInfo]:
    """Refuse the whole ZIP for unsafe entries; return the file entries to unpack."""
    infos = archive.infolist()
    if len(infos) > MAX_ENTRIES:
        raise ZipRejected(f"{len(infos)} entries, more than the {MAX_ENTRIES} allowed")
    files = []
    for info in infos:
        why = _unsafe_name(info.filename)
        if why:
            raise ZipRejected(f"entry {info.filename!r} refused: {why}")
        if _is_link(info):
            raise ZipRejected(f"entry {info.filename!r} refused: it is a symbolic link")
        if info.flag_bits & 0x1:
            raise ZipRejected(f"entry {info.filename!r} is encrypted")
        if not info.is_dir():
            files.append(info)
    declared = sum(i.file_size for i in files)
    if declared > MAX_TOTAL_BYTES:
        raise ZipRejected(f"unpacks to {declared} bytes, more than the {MAX_TOTAL_BYTES} allowed")
    return files


def unpack(zip_path: Path, work: Path) -> Unpacked:
    """Unpack DICOM members into ``work`` (created); skip DICOMDIR and non-DICOM entries."""
    work.mkdir(parents=True, exist_ok=True)
    result = Unpacked()
    try:
        with zipfile.ZipFile(zip_path) as archive:
            total = 0
            for number, info in enumerate(check_entries(archive), start=1):
                if PurePosixPath(info.filename.replace("\\", "/")).name.upper() == "DICOMDIR":
                    result.skipped.append(f"{info.filename}: DICOMDIR (not an image)")
                    continue
                target = work / f"{number:06d}.dcm"
                total += _copy_member(archive, info, target, total)
                if _is_dicom(target):
                    result.dicom_files.append(target)
                else:
                    target.unlink()
                    result.skipped.append(f"{info.filename}: not a DICOM file")
    except zipfile.BadZipFile as err:
        raise ZipRejected(f"not a valid ZIP file, truncated or damaged ({err})") from None
    except (EOFError, zipfile.LargeZipFile, NotImplementedError, RuntimeError) as err:
        raise ZipRejected(f"cannot unpack: {err}") from None
    return result


def _copy_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path, total_before: int) -> int:
    """Copy one member, stopping as soon as sizes go past what is allowed."""
    limit = min(MAX_TOTAL_BYTES - total_before, max(info.compress_size, 1) * MAX_RATIO + CHUNK)
    written = 0
    with archive.open(info) as source, open(target, "wb") as sink:
        while chunk := source.read(CHUNK):
            written += len(chunk)
            if written > limit:
                raise ZipRejected(f"entry {info.filename!r} unpacks far beyond its size (zip bomb?)")
            sink.write(chunk)
    return written


def _is_dicom(path: Path) -> bool:
    with open(path, "rb") as handle:
        head = handle.read(132)
    return len(head) == 132 and head[128:132] == b"DICM"
