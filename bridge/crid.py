"""Recipient IDs (CRID#) in a DICOM text value: find them, cut out every trace of them.

Works on the element's raw bytes so the text around the IDs survives byte for byte, whatever
its character set. See the README ("What happens to a study", step 2).

Grammar (bytes):

- *recipient-ID text* (a fragment) is ``CRID#`` in any letter case, then — when digits follow
  after optional whitespace — that whitespace, then every byte up to the next whitespace,
  value separator (``\\``), person-name delimiter (``^``, ``=``), control byte, next ``CRID#``
  or the end of the value;
- a *recipient ID* is a fragment that is exactly upper-case ``CRID#`` + 16 ASCII digits;
- the value is *clean* when its fragments are all recipient IDs standing at the end of the
  value, separated from each other only by whitespace (or nothing), at most five distinct.

Every fragment is removed, clean or not, so no partial ID can leave in a file. Only a clean
value routes: anything else gives no IDs and a reason, and the study goes to Inbox_Manual.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import IO

PREFIX = b"CRID#"
ID_DIGITS = 16
MAX_IDS = 5

_FRAGMENT = re.compile(rb"CRID#(?:\s*(?=[0-9]))?(?:(?!CRID#)[^\s\\^=\x00-\x1f\x7f])*", re.IGNORECASE)
_RECIPIENT_ID = re.compile(rb"CRID#([0-9]{16})")  # case-sensitive: a lower-case prefix is malformed
_WHITESPACE = b" \t\r\n\f\v"
_SHOWN_BYTES = 40  # a fragment quoted in a warning is cut to this length
WATCHED_BYTES = 64 * 1024  # how much of each file the zipper's safety net looks at


@dataclass(frozen=True)
class CridSplit:
    """The value with every recipient-ID fragment cut out, and what the fragments said."""

    kept: bytes
    ids: tuple[str, ...]
    malformed: str = ""  # why the value does not route; empty when the IDs are good

    @property
    def found_suffix(self) -> bool:
        """Whether the value held any recipient-ID text (so the file must be rewritten)."""
        return bool(self.ids or self.malformed)


def _shown(fragment: bytes) -> str:
    """A fragment as a warning may quote it: ASCII only, short, no control characters."""
    text = fragment[:_SHOWN_BYTES].decode("ascii", "backslashreplace")
    return repr(text + ("…" if len(fragment) > _SHOWN_BYTES else ""))


def _without_fragments(text: bytes, fragments: list[re.Match[bytes]]) -> bytes:
    """``text`` with each fragment and the whitespace that separated it from its neighbours removed."""
    kept = bytearray()
    position = 0
    for fragment in fragments:
        segment = text[position : fragment.start()]
        if position and not kept.strip(_WHITESPACE):
            segment = segment.lstrip(_WHITESPACE)
        kept += segment.rstrip(_WHITESPACE)
        position = fragment.end()
    segment = text[position:]
    if not kept.strip(_WHITESPACE):
        segment = segment.lstrip(_WHITESPACE)
    kept += segment
    return bytes(kept).rstrip(b" ")


def _trailing_ids(text: bytes, fragments: list[re.Match[bytes]]) -> list[bytes]:
    """The recipient IDs of the clean run at the end of ``text``, in order (empty when none)."""
    run: list[bytes] = []
    run_start = len(text)
    for fragment in reversed(fragments):
        token = _RECIPIENT_ID.fullmatch(fragment.group())
        if token is None or text[fragment.end() : run_start].strip(_WHITESPACE):
            break
        run.append(token.group(1))
        run_start = fragment.start()
    return run[::-1]


def _problem(fragment: bytes) -> str:
    if _RECIPIENT_ID.fullmatch(fragment):
        return f"{_shown(fragment)} is not at the end of the value"
    if _RECIPIENT_ID.fullmatch(PREFIX + fragment[len(PREFIX) :]):
        return f"{_shown(fragment)}: the prefix is not upper-case 'CRID#'"
    return f"{_shown(fragment)} is not 'CRID#' + {ID_DIGITS} digits"


def split_crids(value: bytes) -> CridSplit:
    """Split a raw text value into (text kept in the file, recipient IDs, why it does not route).

    A value without recipient-ID text is returned untouched. Otherwise the kept text is the
    value with every fragment removed and trailing spaces trimmed; IDs are given only when
    the value is clean, else ``malformed`` says why (the study then goes to manual handling
    rather than to a wrong or partial set of recipients).
    """
    text = value.rstrip(b" \x00")
    fragments = list(_FRAGMENT.finditer(text))
    if not fragments:
        return CridSplit(kept=value, ids=())
    kept = _without_fragments(text, fragments)
    trailing = _trailing_ids(text, fragments)
    problems = [_problem(fragment.group()) for fragment in fragments[: len(fragments) - len(trailing)]]
    distinct = merge_ids([tuple(crid.decode("ascii") for crid in trailing)])
    if len(distinct) > MAX_IDS:
        problems.append(f"{len(distinct)} recipient IDs, at most {MAX_IDS} allowed")
    if problems:
        return CridSplit(kept=kept, ids=(), malformed="; ".join(problems))
    return CridSplit(kept=kept, ids=distinct)


def without_crid_text(text: str) -> str:
    """Decoded text with every recipient-ID fragment removed (for names and the log book)."""
    raw = text.encode("utf-8", "surrogatepass")
    fragments = list(_FRAGMENT.finditer(raw))
    if not fragments:
        return text
    return _without_fragments(raw, fragments).decode("utf-8", "surrogatepass")


class PrefixWatch:
    """A write-through wrapper noting the first ``CRID#`` or ``crid#`` in a file's first bytes (a safety net).

    The zipper removes recipient-ID text from the configured element only; this notices one
    left elsewhere (another element, a sequence item such as Original Attributes, a private
    tag) so that the study goes to manual handling with a warning. Only the first
    ``watched_bytes`` are looked at, where a file's text elements are (bulk pixel data
    follows): scanning a whole noisy 265 MB study cost 0.4 s, the first 64 KB of each file
    almost nothing. Mixed-case prefixes are not looked for.
    """

    _PREFIXES = (PREFIX, PREFIX.lower())

    def __init__(self, target: IO[bytes], watched_bytes: int = WATCHED_BYTES) -> None:
        self.target = target
        self.found_at: int | None = None
        self._watched_bytes = watched_bytes
        self._written = 0
        self._tail = b""

    def _first(self, data: bytes) -> int:
        hits = [at for at in (data.find(prefix) for prefix in self._PREFIXES) if at >= 0]
        return min(hits) if hits else -1

    def write(self, data: bytes | bytearray) -> int:
        if self.found_at is None and self._written < self._watched_bytes:
            chunk = bytes(data[: self._watched_bytes - self._written + len(PREFIX) - 1])
            joined = self._tail + chunk[: len(PREFIX) - 1]
            at = self._first(joined)
            if at >= 0:
                self.found_at = self._written - len(self._tail) + at
            elif (at := self._first(chunk)) >= 0:
                self.found_at = self._written + at
            self._tail = (self._tail + chunk)[-(len(PREFIX) - 1) :]
        self._written += len(data)
        return self.target.write(data)


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
