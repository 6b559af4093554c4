"""The Windows service, tested on Linux: the WinSW definition, the command lines run, path handling.

No Windows machine runs these tests; everything Windows-specific is text or a command line
built by bridge.windows_service, and each external command goes through a runner the test replaces.
"""

from __future__ import annotations

import subprocess
from pathlib import PureWindowsPath
from xml.etree import ElementTree

import pytest

from bridge.service_manager import ServiceError, service_manager
from bridge.service_unit import SystemdService
from bridge.windows_service import WinswService, grant_commands, winsw_xml

from .conftest import write_config

PYTHON = PureWindowsPath(r"C:\Program Files\DicomBridge & Co\venv\Scripts\python.exe")
CONFIG = PureWindowsPath(r"C:\ProgramData\DicomBridge\my config.toml")
FOLDER = PureWindowsPath(r"C:\ProgramData\DicomBridge\service")


def _definition(user: str | None = None) -> ElementTree.Element:
    return ElementTree.fromstring(winsw_xml(PYTHON, CONFIG, FOLDER, user))


def test_definition_runs_the_headless_command_at_boot_restarting_on_failure():
    service = _definition()
    assert service.findtext("id") == "dicombridge"
    assert service.findtext("executable") == str(PYTHON)  # "&" survived the XML
    expected = r'-m bridge.cli --headless --config "C:\ProgramData\DicomBridge\my config.toml"'
    assert service.findtext("arguments") == expected
    assert service.findtext("startmode") == "Automatic" and service.find("delayedAutoStart") is not None
    assert [f.get("action") for f in service.findall("onfailure")] == ["restart"] * 3  # the last one repeats
    assert service.findtext("stoptimeout") == "60 sec"  # Ctrl+C, then this long to finish associations
    assert service.findtext("logpath") == r"C:\ProgramData\DicomBridge\service\logs"
    assert service.find("log").get("mode") == "roll-by-size"


def test_service_account_is_local_service_unless_a_user_is_given():
    default = _definition().find("serviceaccount")
    assert (default.findtext("domain"), default.findtext("user")) == ("NT AUTHORITY", "LocalService")
    assert default.find("allowservicelogon") is None
    named = _definition(r"PRAXIS\dicom").find("serviceaccount")
    assert (named.findtext("domain"), named.findtext("user"), named.findtext("allowservicelogon")) == \
        ("PRAXIS", "dicom", "true")
    local = _definition("dicom").find("serviceaccount")
    assert local.find("domain") is None and local.findtext("user") == "dicom"


def test_grants_give_the_service_account_modify_rights_by_sid():
    assert grant_commands([PureWindowsPath(r"D:\Crype Dcm")], None) == [
        ["icacls", r"D:\Crype Dcm", "/grant", "*S-1-5-19:(OI)(CI)M", "/T", "/Q"]]
    assert grant_commands([PureWindowsPath("D:/store")], r"PRAXIS\dicom")[0][1:4] == [
        r"D:\store", "/grant", r"PRAXIS\dicom:(OI)(CI)M"]


class FakeWindows:
    """Records every command; WinSW's ``status`` answers ``state``."""

    def __init__(self) -> None:
        self.commands: list[list[str]] = []
        self.state = "Started"

    def __call__(self, command: list[str]) -> subprocess.CompletedProcess[str]:
        self.commands.append(command)
        out = self.state if command[-1] == "status" else ""
        return subprocess.CompletedProcess(command, 0, out, "")


@pytest.fixture
def windows(tmp_path):
    fake = FakeWindows()
    wrapper = tmp_path / "WinSW-x64.exe"
    wrapper.write_bytes(b"MZ fake WinSW")
    return fake, WinswService(folder=tmp_path / "service", wrapper=wrapper, runner=fake)


def test_install_copies_winsw_writes_the_definition_grants_access_installs_and_starts(tmp_path, windows):
    fake, manager = windows
    config = write_config(tmp_path / "config.toml", general__storage_folder=str(tmp_path / "store"))
    assert "installed and started" in manager.install(config)
    exe = str(manager.executable)
    assert manager.executable.read_bytes() == b"MZ fake WinSW"
    assert ElementTree.parse(manager.definition).getroot().findtext("id") == "dicombridge"
    assert [c[0] for c in fake.commands[:3]] == ["icacls"] * 3
    assert [c[1] for c in fake.commands[:3]] == [str(PureWindowsPath(p)) for p in
                                                 (tmp_path / "store", tmp_path, tmp_path / "service")]
    assert fake.commands[3:] == [[exe, "install"], [exe, "start"]]
    assert manager.status() == (0, "Windows service dicombridge: Started")
    fake.state = "Stopped"
    assert manager.status()[0] == 3
    fake.commands.clear()
    manager.install(config)  # again: the old registration is removed first
    assert fake.commands[:2] == [[exe, "stop"], [exe, "uninstall"]]
    fake.commands.clear()
    assert "removed" in manager.uninstall()
    assert fake.commands == [[exe, "stop"], [exe, "uninstall"]]
    assert not manager.definition.exists() and not manager.executable.exists()
    assert manager.status() == (3, f"{manager.definition}: not installed")


def test_install_refuses_a_missing_config_and_a_missing_winsw(tmp_path, windows):
    fake, manager = windows
    with pytest.raises(ServiceError, match="does not exist"):
        manager.install(tmp_path / "conifg.toml")
    config = write_config(tmp_path / "config.toml", general__storage_folder=str(tmp_path / "store"))
    with pytest.raises(ServiceError, match="--winsw"):
        WinswService(folder=tmp_path / "other", wrapper=tmp_path / "missing.exe", runner=fake).install(config)
    assert fake.commands == []


def test_a_failing_command_is_reported_and_stops_the_install(tmp_path, windows):
    _, manager = windows
    manager.run = lambda command: subprocess.CompletedProcess(command, 5, "", "Access is denied.")
    config = write_config(tmp_path / "config.toml", general__storage_folder=str(tmp_path / "store"))
    with pytest.raises(ServiceError, match="icacls .* failed: Access is denied"):
        manager.install(config)


def test_the_platform_chooses_the_manager(tmp_path):
    assert isinstance(service_manager(tmp_path, platform="win32"), WinswService)
    assert isinstance(service_manager(tmp_path, platform="linux"), SystemdService)
    assert service_manager(platform="win32").folder.parts[-2:] == ("DicomBridge", "service")  # type: ignore[attr-defined]


def test_windows_paths_keep_their_drive_and_backslashes_in_the_definition():
    text = winsw_xml(PureWindowsPath("C:/venv/Scripts/python.exe"), PureWindowsPath("D:/cfg/config.toml"),
                     PureWindowsPath("C:/svc"))
    service = ElementTree.fromstring(text)
    assert service.findtext("executable") == r"C:\venv\Scripts\python.exe"
    assert service.findtext("arguments").endswith(r"--config D:\cfg\config.toml")
    assert service.findtext("workingdirectory") == r"C:\svc"
