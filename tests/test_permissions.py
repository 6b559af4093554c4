"""Owner-only files by default (issue #5): storage, logs, ZIPs and config are not readable by others."""

from __future__ import annotations

import os
import stat
from dataclasses import replace

from bridge.engine import Engine
from bridge.logbook import WARNING
from bridge.settings import load_settings

from .conftest import start_running_bridge
from .peers import run_storescu
from .studies import make_study


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def _receive_one_study(settings, tmp_path) -> tuple[Engine, list]:
    running = start_running_bridge(settings)
    run_storescu(settings.receive_port, [str(f) for f in make_study(tmp_path / "s", count=2).files])
    running.wait_routed()
    return running.engine, running.zips("Inbox_Manual") + running.zips("Inbox_Auto")


def test_everything_the_bridge_creates_is_owner_only(bridge_settings, tmp_path):
    engine, zips = _receive_one_study(bridge_settings, tmp_path)
    try:
        layout = engine.layout
        assert _mode(layout.root) == 0o700
        assert _mode(layout.work) == 0o700 and _mode(layout.logs) == 0o700
        assert {_mode(f) for f in layout.logs.iterdir() if f.is_file()} == {0o600}
        assert zips and {_mode(z) for z in zips} == {0o600}
        assert not [r for r in engine.logbook.newest() if r.status == WARNING]
    finally:
        engine.stop(grace_seconds=2)


def test_a_storage_folder_others_can_read_is_reported_not_changed(bridge_settings, tmp_path):
    root = bridge_settings.storage_folder
    root.mkdir(parents=True)
    os.chmod(root, 0o755)
    engine = Engine(bridge_settings, bind_address="127.0.0.1")
    engine.start()
    try:
        warnings = [r.detail for r in engine.logbook.newest() if r.status == WARNING]
        assert any("can be read by other accounts (mode 755)" in w and "chmod 700" in w for w in warnings)
        assert _mode(root) == 0o755
        assert _mode(engine.layout.logs) == 0o700
    finally:
        engine.stop(grace_seconds=2)


def test_share_with_group_lets_the_group_read(bridge_settings, tmp_path):
    engine, zips = _receive_one_study(replace(bridge_settings, share_with_group=True), tmp_path)
    try:
        assert _mode(engine.layout.logs) == 0o750
        assert zips and {_mode(z) for z in zips} == {0o640}
    finally:
        engine.stop(grace_seconds=2)


def test_the_config_file_is_created_private_and_saving_keeps_its_mode(tmp_path):
    from bridge.settings import save_values

    os.umask(0o022)  # as in a login shell
    config = tmp_path / "config.toml"
    load_settings(config)
    assert _mode(config) == 0o600
    os.chmod(config, 0o640)  # an admin's choice survives a save from the UI
    save_values(config, {"receive.port": 11113})
    assert _mode(config) == 0o640 and load_settings(config).receive_port == 11113
