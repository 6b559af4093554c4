"""Recipient IDs (CRID#) at the end of a DICOM text value: find them and cut them off.

Works on the element's raw bytes so the text before the IDs survives byte for byte, whatever
its character set. See the manual §3: ``CRID#`` + 16 digits, up to five, at the end.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

PREFIX = b"CRID#"
ID_DIGITS = 16
MAX_IDS = 5

# A suffix "looks like IDs" when, from some CRID# on, the value holds only CRID#-tagged
# non-space runs; the first such CRID# starts the suffix.
_SUFFIX = re.compile(rb"(?:CRID#[^\s\x00]*)+\Z", re.IGNORECASE)
_VALID_ID = re.compile(rb"[0-9]{16}")


@dataclass(frozen=True)
class CridSplit:
    """The value cut in two: what the element keeps, and what the suffix said."""

    kept: bytes
    ids: tuple[str, ...]
    malformed: str = ""  # why the suffix was refused; empty when the IDs are good

    @property
    def found_suffix(self) -> bool:
        return bool(self.ids or self.malformed)


def split_crids(value: bytes) -> CridSplit:
    """Split a raw text value into (kept text, recipient IDs).

    The kept text is the value before the suffix with trailing spaces trimmed. A malformed
    suffix (wrong digit count, more than five IDs, wrong case) is cut off too, with no IDs,
    so the study goes to manual handling rather than to a wrong recipient.
    """
    text = value.rstrip(b" \x00")
    match = _SUFFIX.search(text)
    if match is None:
        return CridSplit(kept=value, ids=())
    kept = text[: match.start()].rstrip(b" ")
    suffix = match.group(0)
    pieces = re.split(rb"(?i)CRID#", suffix)[1:]
    problems = []
    if suffix.count(PREFIX) != len(pieces):
        problems.append("prefix is not upper-case 'CRID#'")
    bad = [piece.decode("ascii", "replace") for piece in pieces if not _VALID_ID.fullmatch(piece)]
    if bad:
        problems.append(f"not {ID_DIGITS} digits: {', '.join(repr(b) for b in bad)}")
    if len(pieces) > MAX_IDS:
        problems.append(f"{len(pieces)} IDs, at most {MAX_IDS} allowed")
    if problems:
        return CridSplit(kept=kept, ids=(), malformed="; ".join(problems))
    return CridSplit(kept=kept, ids=tuple(piece.decode("ascii") for piece in pieces))


def merge_ids(id_lists: list[tuple[str, ...]]) -> tuple[str, ...]:
    """Union of several images' IDs in order of first appearance, without duplicates."""
    merged: dict[str, None] = {}
    for ids in id_lists:
        for crid in ids:
            merged.setdefault(crid, None)
    return tuple(merged)


def format_ids(ids: tuple[str, ...]) -> str:
    """The concatenated form used in the tag and in ZIP names: CRID#aCRID#b."""
    return "".join(f"CRID#{crid}" for crid in ids)
