"""``dicombridge service install|uninstall|status``: run the headless bridge under systemd.

The unit restarts the bridge when it fails, starts it after the network, stops it with
SIGTERM (the bridge finishes running associations), and grants only CAP_NET_BIND_SERVICE so
port 104 works without root. On machines without systemd the commands say so; the README has
the command line for other service managers.
"""

from __future__ import annotations

import getpass
import shutil
import subprocess
import sys
from pathlib import Path

UNIT_NAME = "dicombridge.service"
SYSTEM_UNIT_DIR = Path("/etc/systemd/system")


class ServiceError(RuntimeError):
    """The service cannot be installed or queried here; the message says why."""


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"' if any(c in value for c in ' "\\') else value


def unit_text(config_path: Path, user: str, python: str = sys.executable) -> str:
    """The systemd unit running ``python -m bridge.cli --headless --config CONFIG`` as ``user``."""
    command = " ".join(_quote(part) for part in (python, "-m", "bridge.cli", "--headless", "--config",
                                                  str(config_path)))
    return f"""[Unit]
Description=DicomBridge: DICOM bridge between the PACS and the secure-messaging app
After=network-online.target
Wants=network-online.target

[Service]
Type=simple
User={user}
ExecStart={command}
Restart=on-failure
RestartSec=5
KillSignal=SIGTERM
TimeoutStopSec=60
AmbientCapabilities=CAP_NET_BIND_SERVICE
CapabilityBoundingSet=CAP_NET_BIND_SERVICE
NoNewPrivileges=true
UMask=0077

[Install]
WantedBy=multi-user.target
"""


def _systemctl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["systemctl", *args], capture_output=True, text=True, timeout=60)


def _has_systemd() -> bool:
    return shutil.which("systemctl") is not None and Path("/run/systemd/system").is_dir()


def install(config_path: Path, user: str | None = None, unit_dir: Path | None = None) -> str:
    """Write (and, in the system folder, enable and start) the unit; returns what was done."""
    system = unit_dir is None
    if system and not _has_systemd():
        raise ServiceError("this machine does not run systemd; see the README for other service managers")
    target = (unit_dir or SYSTEM_UNIT_DIR) / UNIT_NAME
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(unit_text(config_path.resolve(), user or getpass.getuser()), encoding="utf-8")
    if not system:
        return f"wrote {target}"
    for args in (("daemon-reload",), ("enable", "--now", UNIT_NAME)):
        result = _systemctl(*args)
        if result.returncode != 0:
            raise ServiceError(f"systemctl {' '.join(args)} failed: {result.stderr.strip()}")
    return f"wrote {target}, enabled and started {UNIT_NAME}"


def uninstall(unit_dir: Path | None = None) -> str:
    system = unit_dir is None
    target = (unit_dir or SYSTEM_UNIT_DIR) / UNIT_NAME
    if system and _has_systemd():
        _systemctl("disable", "--now", UNIT_NAME)
    if not target.exists():
        return f"{target} was not installed"
    target.unlink()
    if system and _has_systemd():
        _systemctl("daemon-reload")
    return f"removed {target}"


def status(unit_dir: Path | None = None) -> tuple[int, str]:
    target = (unit_dir or SYSTEM_UNIT_DIR) / UNIT_NAME
    if unit_dir is None and _has_systemd():
        result = _systemctl("status", "--no-pager", UNIT_NAME)
        return result.returncode, (result.stdout or result.stderr).strip()
    installed = "installed" if target.exists() else "not installed"
    note = "" if unit_dir is not None else " (this machine does not run systemd)"
    return (0 if target.exists() else 3), f"{target}: {installed}{note}"
