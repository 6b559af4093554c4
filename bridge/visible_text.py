"""Text from a DICOM file made safe to show: no control, line-break or invisible format characters.

A patient name is whatever the sending modality typed. A tab or newline breaks a log-book
row or a file name; a bidirectional override (U+202E) makes ``evil_gpj.zip`` display as
``evil_piz.jpg``; other format characters (zero-width spaces, isolates) hide text. Those never
reach a file name or the log book: control and line-break characters become a visible
replacement, format characters and lone surrogates are dropped (they have no glyph).
"""

from __future__ import annotations

import unicodedata

_REPLACED = frozenset({"Cc", "Zl", "Zp"})  # control characters, line and paragraph separators
_DROPPED = frozenset({"Cf", "Cs"})  # format characters (bidi controls, zero-width…), lone surrogates


def visible(text: str, replacement: str = " ") -> str:
    """``text`` on one line with every control character replaced and every format character dropped."""
    if text.isprintable() and text.isascii():
        return text  # the usual case, checked at C speed
    return "".join(replacement if category in _REPLACED else "" if category in _DROPPED else char
                   for char, category in ((char, unicodedata.category(char)) for char in text))


def is_visible(text: str) -> bool:
    """Whether ``text`` holds no control, line-break or format character (what :func:`visible` removes)."""
    return not any(unicodedata.category(char) in _REPLACED | _DROPPED for char in text)
