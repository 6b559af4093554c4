"""``dicombridge service`` on Linux: refused when it could not run, a hardened Type=notify unit
that systemd accepts, and the bridge still working under the unit's memory protection."""

from __future__ import annotations

import configparser
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from bridge import service_unit
from bridge.service_checks import ServicePlan
from bridge.service_manager import ServiceError
from bridge.service_unit import SystemdService, unit_text

from .conftest import free_port, write_config
from .peers import run_storescu
from .studies import make_study


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bridge.cli", *args], check=False, capture_output=True, text=True,
                          timeout=120)


def _unit(path: Path) -> configparser.SectionProxy:
    unit = configparser.ConfigParser(interpolation=None, strict=False)  # systemd allows repeated keys
    unit.read(path)
    return unit["Service"]


def _plan(tmp_path: Path, **changes) -> ServicePlan:
    values = {"config": tmp_path / "etc" / "config.toml", "user": "root", "storage": tmp_path / "store",
              "python": sys.executable, "read_paths": ()}
    return ServicePlan(**{**values, **changes})


@pytest.fixture
def world_readable(tmp_path):
    """A folder another account can reach (pytest's own tmp folders are root's alone)."""
    folder = Path(tempfile.mkdtemp(prefix="dicombridge-service-", dir="/tmp"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_install_status_uninstall_in_a_unit_folder(tmp_path):
    config = write_config(tmp_path / "my config.toml", general__storage_folder=str(tmp_path / "my store"))
    units = tmp_path / "units"
    result = _run("service", "install", "--config", str(config), "--unit-dir", str(units))
    assert result.returncode == 0, result.stderr
    service = _unit(units / "dicombridge.service")
    assert service["User"] == "root" and service["Restart"] == "on-failure"
    assert service["Type"] == "notify" and int(service["WatchdogSec"]) > 0
    assert "--headless" in service["ExecStart"] and f'"{config.resolve()}"' in service["ExecStart"]
    assert service["ReadWritePaths"] == f'"{tmp_path / "my store"}" {tmp_path}'
    assert (tmp_path / "my store").is_dir()  # created for the service, so ReadWritePaths= can name it
    assert _run("service", "status", "--unit-dir", str(units)).returncode == 0
    assert _run("service", "uninstall", "--unit-dir", str(units)).returncode == 0
    status = _run("service", "status", "--unit-dir", str(units))
    assert status.returncode == 3 and "not installed" in status.stdout


def test_a_mistyped_config_is_refused_and_not_created(tmp_path):
    missing = tmp_path / "conifg.toml"
    result = _run("service", "install", "--config", str(missing), "--unit-dir", str(tmp_path / "units"))
    assert result.returncode == 1
    assert f"config file {missing} does not exist" in result.stderr
    assert not missing.exists() and not (tmp_path / "units").exists()


def test_an_invalid_config_is_refused(tmp_path):
    config = write_config(tmp_path / "config.toml", receive__port=0)
    result = _run("service", "install", "--config", str(config), "--unit-dir", str(tmp_path / "units"))
    assert result.returncode == 1 and "receive.port" in result.stderr


def test_an_unknown_user_is_refused(tmp_path):
    config = write_config(tmp_path / "config.toml", general__storage_folder=str(tmp_path / "store"))
    result = _run("service", "install", "--config", str(config), "--user", "nosuchuser",
                  "--unit-dir", str(tmp_path / "units"))
    assert result.returncode == 1 and "user nosuchuser does not exist" in result.stderr
    assert not (tmp_path / "units").exists()


needs_root = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None,
                                reason="checking another account's access needs root and setpriv")


def _open_to_others(path: Path) -> bool:
    """Every folder above ``path`` may be entered by any user (a ``mktemp -d`` clone's folder may not)."""
    return all(os.stat(folder).st_mode & stat.S_IXOTH for folder in path.absolute().parents)


# The bridge's check rightly refuses a user who cannot import it; these tests are about the other checks.
checkout_open_to_others = pytest.mark.skipif(
    not (_open_to_others(Path(__file__)) and _open_to_others(Path(sys.executable))),
    reason="this checkout or its venv sits in a folder other users cannot enter, so no other user can run it")


@needs_root
@checkout_open_to_others
def test_a_user_who_cannot_read_the_config_is_refused(tmp_path, world_readable):
    storage = world_readable / "store"
    storage.mkdir(mode=0o777)
    storage.chmod(0o777)
    config = write_config(tmp_path / "config.toml", general__storage_folder=str(storage))  # tmp_path: root only
    result = _run("service", "install", "--config", str(config), "--user", "nobody",
                  "--unit-dir", str(tmp_path / "units"))
    assert result.returncode == 1
    assert f"user nobody cannot run the bridge: cannot read {config}" in result.stderr


@needs_root
def test_a_user_who_cannot_write_the_storage_folder_is_refused(tmp_path, world_readable):
    storage = world_readable / "store"
    storage.mkdir(mode=0o755)  # root's, others may only look
    config = write_config(world_readable / "config.toml", general__storage_folder=str(storage))
    config.chmod(0o644)
    result = _run("service", "install", "--config", str(config), "--user", "nobody",
                  "--unit-dir", str(tmp_path / "units"))
    assert result.returncode == 1
    assert f"cannot write in the storage folder {storage}" in result.stderr
    assert not (tmp_path / "units").exists()


@needs_root
def test_a_user_who_cannot_run_the_venv_is_refused(tmp_path, world_readable):
    venv = tmp_path / "venv-python"  # under a folder only root can enter
    venv.symlink_to(sys.executable)
    storage = world_readable / "store"
    storage.mkdir()
    shutil.chown(storage, "nobody")
    config = write_config(world_readable / "config.toml", general__storage_folder=str(storage))
    config.chmod(0o644)
    with pytest.raises(ServiceError, match="nobody"):
        SystemdService(unit_dir=tmp_path / "units").install(config, "nobody", python=str(venv))


@needs_root
@checkout_open_to_others
def test_a_config_folder_the_user_cannot_write_is_only_a_note(tmp_path, world_readable):
    """An admin may keep the config root's on purpose: the service runs, only UI saves cannot."""
    storage = world_readable / "store"
    config = write_config(world_readable / "config.toml", general__storage_folder=str(storage))
    config.chmod(0o644)
    result = _run("service", "install", "--config", str(config), "--user", "nobody",
                  "--unit-dir", str(tmp_path / "units"))
    assert result.returncode == 0, result.stderr
    assert f"note: user nobody cannot write in {world_readable}: settings cannot be saved" in result.stdout


def test_a_config_in_a_shared_system_folder_does_not_make_it_writable(tmp_path):
    service = _unit_from_text(tmp_path, unit_text(_plan(tmp_path, storage=Path("/srv/dicom"),
                                                        config=Path("/etc/dicombridge.toml"))))
    assert service["ReadWritePaths"] == "/srv/dicom"


@needs_root
@checkout_open_to_others
def test_another_user_who_can_use_everything_gets_a_unit(tmp_path, world_readable):
    storage = world_readable / "store"  # missing: created and given to the user
    config = write_config(world_readable / "config.toml", general__storage_folder=str(storage))
    config.chmod(0o644)
    world_readable.chmod(0o777)  # the UI saves settings beside the config
    result = _run("service", "install", "--config", str(config), "--user", "nobody",
                  "--unit-dir", str(tmp_path / "units"))
    assert result.returncode == 0, result.stderr
    assert storage.stat().st_uid == stat_uid("nobody") and stat.S_IMODE(storage.stat().st_mode) == 0o700
    assert _unit(tmp_path / "units" / "dicombridge.service")["User"] == "nobody"
    assert "note:" not in result.stdout


def stat_uid(user: str) -> int:
    import pwd

    return pwd.getpwnam(user).pw_uid


def test_system_install_enables_and_restarts_through_systemctl(tmp_path, monkeypatch):
    """Where the real systemctl would run, a fake one on PATH records what it was asked."""
    calls = tmp_path / "systemctl-calls"
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "systemctl").write_text(f'#!/bin/sh\necho "$@" >> "{calls}"\n')
    (fake_bin / "systemctl").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake_bin}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(service_unit, "SYSTEM_UNIT_DIR", tmp_path / "system")
    monkeypatch.setattr(service_unit, "_has_systemd", lambda: True)
    config = write_config(tmp_path / "config.toml", general__storage_folder=str(tmp_path / "store"))
    SystemdService().install(config)
    assert calls.read_text().splitlines() == ["daemon-reload", "enable dicombridge.service",
                                              "restart dicombridge.service"]
    assert (tmp_path / "system" / "dicombridge.service").is_file()
    SystemdService().uninstall()
    assert calls.read_text().splitlines()[-2:] == ["disable --now dicombridge.service", "daemon-reload"]
    assert not (tmp_path / "system" / "dicombridge.service").exists()


def test_install_without_systemd_says_so(tmp_path, monkeypatch):
    monkeypatch.setattr(service_unit, "_has_systemd", lambda: False)
    with pytest.raises(ServiceError, match="does not run systemd"):
        SystemdService().install(tmp_path / "config.toml")


def test_unit_is_hardened_like_a_network_daemon(tmp_path):
    service = _unit_from_text(tmp_path, unit_text(_plan(tmp_path, storage=Path("/srv/dicom"),
                                                        config=Path("/etc/dicombridge/config.toml"))))
    expected = {
        "ProtectSystem": "strict", "ReadWritePaths": "/srv/dicom /etc/dicombridge", "PrivateTmp": "yes",
        "NoNewPrivileges": "yes", "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
        "CapabilityBoundingSet": "CAP_NET_BIND_SERVICE", "AmbientCapabilities": "CAP_NET_BIND_SERVICE",
        "LockPersonality": "yes", "MemoryDenyWriteExecute": "yes", "ProtectKernelTunables": "yes",
        "ProtectKernelModules": "yes", "ProtectKernelLogs": "yes", "ProtectControlGroups": "yes",
        "RestrictNamespaces": "yes", "RestrictRealtime": "yes", "RestrictSUIDSGID": "yes", "UMask": "0077",
        "Type": "notify", "NotifyAccess": "main", "Restart": "on-failure",
    }
    assert {key: service.get(key) for key in expected} == expected
    assert "@system-service" in unit_text(_plan(tmp_path)).split("SystemCallFilter=", 1)[1].splitlines()[0]


@pytest.mark.parametrize(("where", "protect_home"), [
    ({"storage": Path("/srv/dicom")}, None),
    ({"storage": Path("/home/dicom/CrypeDcm")}, "read-only"),
    ({"config": Path("/root/dicombridge/config.toml")}, "read-only"),
    ({"read_paths": (Path("/home/pki/bridge.key"),)}, "read-only"),
])
def test_protect_home_is_read_only_only_when_the_bridge_needs_something_there(tmp_path, where, protect_home):
    plan = _plan(tmp_path, python="/opt/dicombridge/.venv/bin/python",
                 **{"config": Path("/etc/dicombridge/config.toml"), **where})
    if protect_home is None:  # the test's own venv may live under /root: only judge when it does not
        protect_home = "read-only" if service_unit._under_home(Path(service_unit.__file__).resolve()) else "yes"
    assert _unit_from_text(tmp_path, unit_text(plan))["ProtectHome"] == protect_home


def test_paths_with_spaces_percent_and_dollar_survive_the_unit_syntax(tmp_path):
    plan = _plan(tmp_path, storage=Path("/srv/100% $HOME store"), config=Path("/etc/$db/my config.toml"))
    service = _unit_from_text(tmp_path, unit_text(plan))
    assert service["ReadWritePaths"] == '"/srv/100%% $HOME store" /etc/$db'  # $ is only special in commands
    assert service["ExecStart"].endswith('--config "/etc/$$db/my config.toml"')


def _unit_from_text(tmp_path: Path, text: str) -> configparser.SectionProxy:
    path = tmp_path / "dicombridge.service"
    path.write_text(text)
    return _unit(path)


def _analyze(*args: str) -> subprocess.CompletedProcess[str]:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed on this machine")
    return subprocess.run([analyze, *args], check=False, capture_output=True, text=True, timeout=120)


def test_unit_passes_systemd_analyze_verify(tmp_path):
    for plan in (_plan(tmp_path), _plan(tmp_path, storage=Path("/home/a b/100% store"))):
        unit = tmp_path / "dicombridge.service"
        unit.write_text(unit_text(plan))
        result = _analyze("verify", str(unit))
        problems = [line for line in result.stderr.splitlines() if "dicombridge.service" in line]
        assert not problems, result.stderr


def test_security_exposure_is_low(tmp_path):
    """``systemd-analyze security`` on the unit file (offline); the README quotes the figure."""
    unit = tmp_path / "dicombridge.service"
    unit.write_text(unit_text(_plan(tmp_path)))
    result = _analyze("security", "--offline=true", str(unit))
    if "Unknown option" in result.stderr or "unrecognized option" in result.stderr:
        pytest.skip("this systemd-analyze cannot judge a unit file offline")
    overall = [line for line in result.stdout.splitlines() if "Overall exposure level" in line]
    assert overall, result.stdout + result.stderr
    exposure = float(overall[0].split("level for dicombridge.service:")[1].split()[0])
    assert exposure <= 2.5, result.stdout


_MDWE_LAUNCHER = """  # prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN), kept across exec
import ctypes, mmap, os, sys
if ctypes.CDLL(None, use_errno=True).prctl(65, 1, 0, 0, 0) != 0:
    sys.exit(77)
try:  # the rule bites: writable and executable memory is refused from now on
    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    sys.exit(78)
except PermissionError:
    pass
os.execv(sys.executable, [sys.executable, *sys.argv[1:]])
"""


def test_the_bridge_receives_and_zips_under_memory_deny_write_execute(tmp_path):
    """MemoryDenyWriteExecute=yes forbids writable+executable memory; the kernel's PR_SET_MDWE is the
    same rule (systemd uses it where the kernel has it): Python, pynetdicom and ISA-L's deflate must work."""
    port = free_port()
    config = write_config(tmp_path / "config.toml", general__storage_folder=str(tmp_path / "store"),
                          general__min_free_mb=0, receive__port=port, receive__timeout_seconds=1)
    bridge = subprocess.Popen([sys.executable, "-c", _MDWE_LAUNCHER, "-m", "bridge.cli", "--headless", "--config",
                               str(config)], stderr=subprocess.PIPE, text=True)
    try:
        lines = []
        for line in bridge.stderr:  # type: ignore[union-attr]
            lines.append(line)
            if "running headless" in line:
                break
        if bridge.poll() == 77:
            pytest.skip("this kernel has no PR_SET_MDWE (Linux < 6.3)")
        assert bridge.poll() != 78, "PR_SET_MDWE did not refuse writable+executable memory"
        assert "running headless" in "".join(lines), "".join(lines)
        study = make_study(tmp_path / "study", count=3, crid_value="1234567890123456")
        run_storescu(port, [str(p) for p in study.files])
        for line in bridge.stderr:  # type: ignore[union-attr]
            lines.append(line)
            if "zipped into" in line or "Traceback" in line:
                break
        assert "3 images zipped into Inbox_Manual" in "".join(lines), "".join(lines)
    finally:
        bridge.terminate()
        bridge.wait(timeout=60)
