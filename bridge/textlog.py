"""The plain-text log for support: rotating files beside the log book, and stderr if wanted."""

from __future__ import annotations

import logging
import logging.handlers
import sys
from pathlib import Path

_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def setup_text_log(path: Path, to_stderr: bool, level: int = logging.INFO) -> logging.Handler:
    """Attach a rotating file handler (5 × 5 MB) to the ``bridge`` logger; returns it for removal."""
    logger = logging.getLogger("bridge")
    logger.setLevel(level)
    handler = logging.handlers.RotatingFileHandler(path, maxBytes=5 * 1024 * 1024, backupCount=5, encoding="utf-8")
    handler.setFormatter(logging.Formatter(_FORMAT))
    logger.addHandler(handler)
    if to_stderr and not any(getattr(h, "_dicombridge_stderr", False) for h in logger.handlers):
        console = logging.StreamHandler(sys.stderr)
        console.setFormatter(logging.Formatter(_FORMAT))
        console._dicombridge_stderr = True  # type: ignore[attr-defined]
        logger.addHandler(console)
    return handler
