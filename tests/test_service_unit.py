"""``dicombridge service``: a unit that systemd accepts, written to a folder of the test's."""

import configparser
import shutil
import subprocess
import sys

import pytest

from bridge.service_unit import unit_text

from .conftest import write_config


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bridge.cli", *args], capture_output=True, text=True, timeout=60)


def test_install_status_uninstall_in_a_unit_folder(tmp_path):
    config = write_config(tmp_path / "my config.toml")
    units = tmp_path / "units"
    result = _run("service", "install", "--config", str(config), "--user", "dicom", "--unit-dir", str(units))
    assert result.returncode == 0, result.stderr
    unit = configparser.ConfigParser(interpolation=None, strict=False)
    unit.read(units / "dicombridge.service")
    service = unit["Service"]
    assert service["User"] == "dicom" and service["Restart"] == "on-failure"
    assert service["AmbientCapabilities"] == "CAP_NET_BIND_SERVICE"
    assert "--headless" in service["ExecStart"] and f'"{config.resolve()}"' in service["ExecStart"]
    assert "network-online.target" in unit["Unit"]["After"]
    assert unit["Install"]["WantedBy"] == "multi-user.target"
    assert _run("service", "status", "--unit-dir", str(units)).returncode == 0
    assert _run("service", "uninstall", "--unit-dir", str(units)).returncode == 0
    status = _run("service", "status", "--unit-dir", str(units))
    assert status.returncode != 0 and "not installed" in status.stdout


def test_unit_passes_systemd_analyze_verify_where_available(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed on this machine")
    unit = tmp_path / "dicombridge.service"
    unit.write_text(unit_text(tmp_path / "config.toml", "root"))
    result = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    problems = [line for line in result.stderr.splitlines() if "dicombridge.service" in line]
    assert not problems, result.stderr


def test_install_without_systemd_says_so(tmp_path, monkeypatch):
    from bridge import service_unit

    monkeypatch.setattr(service_unit, "_has_systemd", lambda: False)
    with pytest.raises(service_unit.ServiceError, match="does not run systemd"):
        service_unit.install(tmp_path / "config.toml")
