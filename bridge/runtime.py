"""Process-wide setup in one explicit call: the switches pynetdicom, zipfile and tempfile read from globals.

They belong to the whole process, not to one engine or one association, so they are set here,
once, by whoever starts the work (the engine, the command-line commands, the conformance
generator, tests that drive the modules directly) instead of as a side effect of importing a
module. Calling it again changes nothing, so every entry point may call it.
"""

from __future__ import annotations

import tempfile
import zipfile
from pathlib import Path

from isal import isal_zlib
from pynetdicom import _config


def configure_process(temp_folder: Path | None = None) -> None:
    """Set the process-wide switches; ``temp_folder``: where pynetdicom writes incoming datasets.

    - Receive C-STORE datasets as files (not in memory), and accept any storage-like SOP class,
      private ones too, in the first transfer syntax the sender proposes (the fast path and the
      conformance statement read the second switch).
    - Send datasets from their files without reading them whole into memory.
    - zipfile looks up ``zlib.compressobj``/``decompressobj`` when it writes and reads: ISA-L's
      drop-in deflate gives the same ratio about 10× faster (its inflate is ≈20 % faster), and
      its CRC-32 (the same checksum) about 6× faster, which the outbox pays on every unpacked byte.
    - pynetdicom (and the fast path) create incoming files in ``tempfile.gettempdir()``: inside
      the storage folder, handing a file to the spool is a cheap rename.
    """
    _config.STORE_RECV_CHUNKED_DATASET = True
    _config.UNRESTRICTED_STORAGE_SERVICE = True
    _config.STORE_SEND_CHUNKED_DATASET = True
    zipfile.zlib = isal_zlib  # type: ignore[attr-defined]
    zipfile.crc32 = isal_zlib.crc32  # type: ignore[attr-defined]
    if temp_folder is not None:
        tempfile.tempdir = str(temp_folder)


def forget_temp_folder(temp_folder: Path) -> None:
    """An engine that stopped no longer lends its folder to everyone else's temporary files
    (its disk may be full or gone); a folder another engine set since stays."""
    if tempfile.tempdir == str(temp_folder):
        tempfile.tempdir = None
