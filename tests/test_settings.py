"""Settings file: created complete and commented, validated with clear messages, saved in place."""

import pytest
import tomlkit

from bridge.settings import SETTINGS, SettingsError, load_settings, save_values

from .conftest import write_config


def test_missing_file_is_created_with_every_setting_and_a_comment(tmp_path):
    path = tmp_path / "sub" / "config.toml"
    settings = load_settings(path)
    text = path.read_text()
    for spec in SETTINGS:
        assert f"{spec.key} = " in text
        assert spec.help in text
    assert settings.receive_port == 11112 and settings.receive_ae_title == "CRYPE_DCM"
    assert settings.receive_timeout_seconds == 30 and settings.crid_tag is None
    assert settings.storage_folder.name == "CrypeDcm"


@pytest.mark.parametrize("override,words", [
    ({"receive__port": 0}, ["receive.port", "0", "1 to 65535"]),
    ({"receive__timeout_seconds": 4000}, ["receive.timeout_seconds", "4000", "1 to 3600"]),
    ({"general__keep_failed_days": 0}, ["general.keep_failed_days", "1 to 365"]),
    ({"receive__ae_title": "A" * 17}, ["receive.ae_title", "1-16"]),
    ({"receive__ae_title": "   "}, ["receive.ae_title", "all spaces"]),
    ({"send__ae_title_sender": "A\\B"}, ["send.ae_title_sender", "backslash"]),
    ({"receive__crid_tag_group": "10"}, ["receive.crid_tag_group", "4 hex digits"]),
    ({"send__host": "bad host!"}, ["send.host", "host name"]),
    ({"receive__enabled": "yes"}, ["receive.enabled", "true or false"]),
])
def test_invalid_values_name_key_value_and_range(tmp_path, override, words):
    path = write_config(tmp_path / "config.toml", **override)
    with pytest.raises(SettingsError) as caught:
        load_settings(path)
    message = str(caught.value).replace("from 1 to", "1 to")
    for word in words:
        assert word in message


def test_hosts_accepted():
    from bridge.settings import validate_value

    for host in ("127.0.0.1", "::1", "pacs.example.org", "PACS-01", ""):
        assert validate_value("send.host", host) == host


def test_save_keeps_comments_and_unknown_keys_and_refuses_bad_values(tmp_path):
    path = tmp_path / "config.toml"
    load_settings(path)
    text = path.read_text().replace("[receive]", "# my note about the PACS\n[receive]\nsite = \"north\"")
    path.write_text(text)
    settings = save_values(path, {"receive.port": 2104})
    assert settings.receive_port == 2104
    saved = path.read_text()
    assert "# my note about the PACS" in saved and 'site = "north"' in saved
    assert tomlkit.parse(saved)["receive"]["port"] == 2104
    with pytest.raises(SettingsError):
        save_values(path, {"receive.port": 70000})
    assert path.read_text() == saved
