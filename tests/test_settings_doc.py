"""The README's settings table is generated from the schema and must be current."""

from dataclasses import fields
from pathlib import Path

from bridge.settings import SETTINGS, Settings
from bridge.settings_doc import settings_table, with_table

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_settings_table_is_current():
    text = README.read_text(encoding="utf-8")
    assert with_table(text) == text, "README settings table is stale: run python -m bridge.settings_doc README.md"


def test_every_setting_has_a_row_and_a_settings_field():
    table = settings_table()
    for spec in SETTINGS:
        assert f"`{spec.name}`" in table
    declared = {f.name for f in fields(Settings)} - {"source"}
    assert declared == {spec.field for spec in SETTINGS}, "Settings fields and the SETTINGS table differ"


def test_only_receive_settings_not_read_live_restart_the_receiver():
    restarting = {spec.name for spec in SETTINGS if spec.restarts_receiver}
    assert "receive.port" in restarting and "receive.tls_cert" in restarting
    assert "receive.timeout_seconds" not in restarting and "general.min_free_mb" not in restarting
