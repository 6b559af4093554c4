"""Owner-only files by default: the storage folder holds patients' images and names.

Everything the bridge creates (ZIPs, spool files, log book, text log, config) is readable by
its own account only, or also by its group when ``general.share_with_group`` is on (for a
messaging app that runs under another account of the same group). Folders an admin created
are not changed behind their back: a storage folder others can read is reported instead.
On Windows the mode bits mean little (ACLs decide; the service installer grants them):
what the platform lacks or refuses is skipped, never fatal.
"""

from __future__ import annotations

import os
import stat

from .layout import StorageLayout

PRIVATE_UMASK = 0o077
GROUP_UMASK = 0o027


def folder_mode(share_with_group: bool) -> int:
    return 0o750 if share_with_group else 0o700


def file_mode(share_with_group: bool) -> int:
    return 0o640 if share_with_group else 0o600


def use_private_umask(share_with_group: bool) -> None:
    """Process-wide: files and folders created from now on are owner (or group) only."""
    try:
        os.umask(GROUP_UMASK if share_with_group else PRIVATE_UMASK)
    except (AttributeError, NotImplementedError, OSError):
        pass  # no umask here (Windows): the folders' ACLs decide


def _chmod(path: os.PathLike[str] | str, mode: int) -> None:
    try:
        os.chmod(path, mode)
    except (AttributeError, NotImplementedError):
        pass  # not supported on this platform


def restrict_storage(layout: StorageLayout, share_with_group: bool) -> str:
    """Tighten the bridge's own folders and log files; returns a warning about the storage root, or ''.

    ``.bridge/`` and ``Logs/`` are ours alone (the log book names patients), so they are
    set on every start; the root and the inboxes are the admin's and are only checked.
    """
    for folder in (layout.work, layout.logs):
        _chmod(folder, folder_mode(share_with_group))
    for entry in layout.logs.iterdir():
        if entry.is_file() and not entry.is_symlink():
            _chmod(entry, file_mode(share_with_group))
    if os.name != "posix":
        return ""  # mode bits do not describe who may read a folder there
    allowed = folder_mode(share_with_group)
    mode = stat.S_IMODE(layout.root.stat().st_mode)
    if mode & ~allowed:
        return (f"storage folder {layout.root} can be read by other accounts (mode {mode:o}); "
                f"run: chmod {allowed:o} {layout.root} (or set general.share_with_group for a messaging app "
                f"in the bridge's group)")
    return ""
