"""Windows: a real service through WinSW, the MIT-licensed service wrapper Jenkins made.

WinSW is one executable that registers itself as the service and runs our headless command
line; everything the bridge decides (the XML, the command lines) is plain text built here and
tested on Linux. Why WinSW and not pywin32's service framework: pywin32 hosts Python inside
``pythonservice.exe``, which needs DLLs copied out of a venv and a different stop path than
the headless runner's; WinSW runs the same command as systemd does, stops it with Ctrl+C (the
runner's SIGINT path) and gives boot start, restart-on-failure and rotating logs by configuration.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path, PurePath, PureWindowsPath
from xml.sax.saxutils import escape

from .service_checks import plan_install
from .service_manager import ServiceError, headless_arguments

SERVICE_ID = "dicombridge"
WRAPPER_NAME = "dicombridge-service"  # WinSW renamed: it reads the XML of the same name beside it
LOCAL_SERVICE = "NT AUTHORITY\\LocalService"  # low-privilege built-in account, no password
LOCAL_SERVICE_SID = "*S-1-5-19"  # the same for icacls, whatever the system language
STOP_TIMEOUT_SECONDS = 60

Runner = Callable[[list[str]], subprocess.CompletedProcess[str]]


def default_folder() -> Path:
    return Path(os.environ.get("PROGRAMDATA", r"C:\ProgramData")) / "DicomBridge" / "service"


def _account(user: str | None) -> tuple[str, str]:
    """(domain, name) of the service account; a bare name is a local account."""
    domain, _, name = (user or LOCAL_SERVICE).rpartition("\\")
    return domain, name


def winsw_xml(python: PurePath, config: PurePath, folder: PurePath, user: str | None = None) -> str:
    """The WinSW service definition: boot start, restart on every failure, Ctrl+C to stop, logs kept."""
    arguments = subprocess.list2cmdline(headless_arguments(PureWindowsPath(config)))
    domain, name = _account(user)
    account = (f"    <domain>{escape(domain)}</domain>\n" if domain else "") + f"    <user>{escape(name)}</user>\n"
    if user:  # a real account needs the right to log on as a service; WinSW grants it
        account += "    <allowservicelogon>true</allowservicelogon>\n"
    return f"""<service>
  <id>{SERVICE_ID}</id>
  <name>DicomBridge</name>
  <description>DICOM bridge between the PACS and the secure-messaging app (dicombridge --headless)</description>
  <executable>{escape(str(PureWindowsPath(python)))}</executable>
  <arguments>{escape(arguments)}</arguments>
  <workingdirectory>{escape(str(PureWindowsPath(folder)))}</workingdirectory>
  <startmode>Automatic</startmode>
  <delayedAutoStart>true</delayedAutoStart>
  <depend>Tcpip</depend>
  <onfailure action="restart" delay="5 sec"/>
  <onfailure action="restart" delay="30 sec"/>
  <onfailure action="restart" delay="60 sec"/>
  <resetfailure>1 hour</resetfailure>
  <stoptimeout>{STOP_TIMEOUT_SECONDS} sec</stoptimeout>
  <env name="PYTHONUNBUFFERED" value="1"/>
  <logpath>{escape(str(PureWindowsPath(folder) / "logs"))}</logpath>
  <log mode="roll-by-size">
    <sizeThreshold>10240</sizeThreshold>
    <keepFiles>8</keepFiles>
  </log>
  <serviceaccount>
{account}  </serviceaccount>
</service>
"""


def grant_commands(paths: list[PurePath], user: str | None) -> list[list[str]]:
    """``icacls`` lines giving the service account modify rights (inherited) on what it writes."""
    who = LOCAL_SERVICE_SID if user is None else user
    return [["icacls", str(PureWindowsPath(path)), "/grant", f"{who}:(OI)(CI)M", "/T", "/Q"] for path in paths]


def _run(command: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, check=False, capture_output=True, text=True, timeout=120)


class WinswService:
    """The WinSW executable and its XML in ``folder``; every external command goes through ``runner``."""

    def __init__(self, folder: Path | None = None, wrapper: Path | None = None, runner: Runner = _run) -> None:
        self.folder = folder or default_folder()
        self.source_wrapper = wrapper
        self.run = runner

    @property
    def executable(self) -> Path:
        return self.folder / f"{WRAPPER_NAME}.exe"

    @property
    def definition(self) -> Path:
        return self.folder / f"{WRAPPER_NAME}.xml"

    def _wrapper(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = self.run([str(self.executable), *args])
        if check and result.returncode != 0:
            raise ServiceError(f"{self.executable.name} {' '.join(args)} failed: "
                               f"{(result.stderr or result.stdout).strip()}")
        return result

    def install(self, config_path: Path, user: str | None = None, python: str = sys.executable) -> str:
        plan = plan_install(config_path, user, python)
        wrapper = self.source_wrapper or (Path(found) if (found := shutil.which("WinSW")) else None)
        if wrapper is None or not wrapper.is_file():
            raise ServiceError("WinSW is needed: download WinSW-x64.exe (v2.12, github.com/winsw/winsw/releases) "
                               "and pass it with --winsw PATH")
        self.folder.mkdir(parents=True, exist_ok=True)
        if self.definition.exists():
            self._wrapper("stop", check=False)
            self._wrapper("uninstall", check=False)
        shutil.copyfile(wrapper, self.executable)
        self.definition.write_text(winsw_xml(PurePath(plan.python), plan.config, self.folder, user),
                                   encoding="utf-8")
        plan.storage.mkdir(parents=True, exist_ok=True)
        for command in grant_commands([plan.storage, plan.config.parent, self.folder], user):
            result = self.run(command)
            if result.returncode != 0:
                raise ServiceError(f"{' '.join(command)} failed: {(result.stderr or result.stdout).strip()}")
        self._wrapper("install")
        self._wrapper("start")
        return f"installed and started the Windows service {SERVICE_ID} ({self.definition})"

    def uninstall(self) -> str:
        if not self.definition.exists():
            return f"{self.definition} was not installed"
        self._wrapper("stop", check=False)
        self._wrapper("uninstall")
        self.definition.unlink()
        self.executable.unlink(missing_ok=True)
        return f"stopped and removed the Windows service {SERVICE_ID}"

    def status(self) -> tuple[int, str]:
        if not self.definition.exists():
            return 3, f"{self.definition}: not installed"
        state = self._wrapper("status", check=False).stdout.strip()  # Started, Stopped or NonExistent
        return (0 if state == "Started" else 3), f"Windows service {SERVICE_ID}: {state or 'unknown'}"


