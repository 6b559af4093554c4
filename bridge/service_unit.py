"""systemd: a hardened ``Type=notify`` unit running the headless bridge, with a watchdog.

The unit restarts the bridge when it fails or hangs (``WatchdogSec``: the headless runner
sends keep-alives only while the engine's workers tick), starts it after the network, stops
it with SIGTERM (the bridge finishes running associations), and confines it like a network
daemon: the file system read-only except the storage folder and the config's folder, no
privileges but binding ports below 1024, only the system calls and address families an
ordinary service uses.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from .service_checks import ServicePlan, check_access, plan_install
from .service_manager import ServiceError, headless_arguments

UNIT_NAME = "dicombridge.service"
SYSTEM_UNIT_DIR = Path("/etc/systemd/system")
WATCHDOG_SECONDS = 60
HOME_FOLDERS = (Path("/home"), Path("/root"), Path("/run/user"))  # what ProtectHome= hides
SHARED_FOLDERS = {Path(p) for p in ("/", "/etc", "/usr", "/usr/local", "/usr/local/etc", "/opt", "/var", "/var/lib",
                                    "/srv", "/home", "/root", "/tmp", "/var/tmp")}  # never made writable

HARDENING = """\
NoNewPrivileges=yes
CapabilityBoundingSet=CAP_NET_BIND_SERVICE
AmbientCapabilities=CAP_NET_BIND_SERVICE
ProtectSystem=strict
PrivateTmp=yes
PrivateDevices=yes
PrivateMounts=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
ProtectProc=invisible
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
MemoryDenyWriteExecute=yes
RemoveIPC=yes
SystemCallArchitectures=native
SystemCallFilter=@system-service
SystemCallFilter=~@privileged @resources
SystemCallErrorNumber=EPERM
UMask=0077"""


def _quote(value: str, in_command: bool = False) -> str:
    """One word of a unit file: ``%`` (and in commands ``$``) escaped, quoted when it holds spaces or quotes."""
    value = value.replace("%", "%%")
    if in_command:
        value = value.replace("$", "$$")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"' if any(c in value for c in ' "\\') else value


def _under_home(path: Path) -> bool:
    return any(path == home or home in path.parents for home in HOME_FOLDERS)


def protect_home(plan: ServicePlan) -> str:
    """``yes`` hides /home, /root and /run/user; ``read-only`` when the bridge needs something there.

    Not ``no``: read-only still keeps the bridge from writing into anyone's home, and the
    storage folder and config folder are made writable again by ``ReadWritePaths=``.
    """
    needed = (plan.config, plan.storage, Path(plan.python), Path(plan.python).resolve(), *plan.read_paths,
              Path(__file__).resolve().parent)
    return "read-only" if any(_under_home(path.absolute()) for path in needed) else "yes"


def unit_text(plan: ServicePlan) -> str:
    """The unit running ``python -m bridge.cli --headless --config CONFIG`` as the plan's user."""
    command = " ".join(_quote(part, in_command=True) for part in (plan.python, *headless_arguments(plan.config)))
    config_folder = [plan.config.parent] if plan.config.parent not in SHARED_FOLDERS else []
    writable = " ".join(_quote(str(path)) for path in dict.fromkeys((plan.storage, *config_folder)))
    return f"""[Unit]
Description=DicomBridge: DICOM bridge between the PACS and the secure-messaging app
After=network-online.target
Wants=network-online.target

[Service]
Type=notify
NotifyAccess=main
User={plan.user}
ExecStart={command}
Restart=on-failure
RestartSec=5
TimeoutStartSec=300
TimeoutStopSec=120
WatchdogSec={WATCHDOG_SECONDS}
KillSignal=SIGTERM
ReadWritePaths={writable}
ProtectHome={protect_home(plan)}
{HARDENING}

[Install]
WantedBy=multi-user.target
"""


def _systemctl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["systemctl", *args], check=False, capture_output=True, text=True, timeout=60)


def _has_systemd() -> bool:
    return shutil.which("systemctl") is not None and Path("/run/systemd/system").is_dir()


class SystemdService:
    """``unit_dir`` None: /etc/systemd/system, enabled and started; else only written there."""

    def __init__(self, unit_dir: Path | None = None) -> None:
        self.unit_dir = unit_dir

    @property
    def _system(self) -> bool:
        return self.unit_dir is None

    @property
    def target(self) -> Path:
        return (self.unit_dir or SYSTEM_UNIT_DIR) / UNIT_NAME

    def install(self, config_path: Path, user: str | None = None, python: str = sys.executable) -> str:
        if self._system and not _has_systemd():
            raise ServiceError("this machine does not run systemd; see the README for other service managers")
        plan = plan_install(config_path, user, python)
        notes = "".join(f"\nnote: {warning}" for warning in check_access(plan))
        self.target.parent.mkdir(parents=True, exist_ok=True)
        self.target.write_text(unit_text(plan), encoding="utf-8")
        if not self._system:
            return f"wrote {self.target}{notes}"
        for args in (("daemon-reload",), ("enable", UNIT_NAME), ("restart", UNIT_NAME)):
            result = _systemctl(*args)
            if result.returncode != 0:
                raise ServiceError(f"systemctl {' '.join(args)} failed: {result.stderr.strip()} "
                                   f"(see: journalctl -u {UNIT_NAME})")
        return f"wrote {self.target}, enabled and started {UNIT_NAME}{notes}"

    def uninstall(self) -> str:
        if self._system and _has_systemd():
            _systemctl("disable", "--now", UNIT_NAME)
        if not self.target.exists():
            return f"{self.target} was not installed"
        self.target.unlink()
        if self._system and _has_systemd():
            _systemctl("daemon-reload")
        return f"removed {self.target}"

    def status(self) -> tuple[int, str]:
        if self._system and _has_systemd():
            result = _systemctl("status", "--no-pager", UNIT_NAME)
            return result.returncode, (result.stdout or result.stderr).strip()
        installed = "installed" if self.target.exists() else "not installed"
        note = "" if not self._system else " (this machine does not run systemd)"
        return (0 if self.target.exists() else 3), f"{self.target}: {installed}{note}"
