"""DICOM over TLS (issue #5) against DCMTK: storescu +tls into the bridge, the bridge into storescp +tls."""

from __future__ import annotations

import socket
import subprocess
from dataclasses import replace

import pytest
from pydicom import dcmread

from bridge.logbook import SUCCESS, WARNING
from bridge.settings import SettingsError, load_settings

from .conftest import start_running_bridge, write_config
from .pacs import StoreSCP
from .peers import PEER_ENV, storescu_args
from .pki import make_pki
from .studies import make_study
from .test_send import SendingBridge, echo_command, sending_settings, zip_of


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def tls_bridge(bridge_settings, pki):
    running = start_running_bridge(replace(bridge_settings, receive_tls_cert=str(pki.server.cert),
                                           receive_tls_key=str(pki.server.key), receive_tls_ca=str(pki.ca)))
    yield running
    running.engine.stop(grace_seconds=2)


def _storescu(port: int, files, *tls_args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(storescu_args("CRYPE_DCM", port, [str(f) for f in files], *tls_args), capture_output=True,
                          text=True, timeout=60, env=PEER_ENV)


def _client_tls(pki) -> tuple[str, ...]:
    return ("+tls", str(pki.client.key), str(pki.client.cert), "+cf", str(pki.ca))


def _warnings(running) -> list[str]:
    return [row.detail for row in running.engine.logbook.newest() if row.status == WARNING]


def test_storescu_over_tls_delivers_a_study(tls_bridge, pki, tmp_path):
    study = make_study(tmp_path / "s", count=3)
    result = _storescu(tls_bridge.port, study.files, *_client_tls(pki))
    assert result.returncode == 0, result.stderr
    (routed,) = tls_bridge.wait_routed()
    assert routed.status == SUCCESS and routed.target.endswith(".zip")
    assert "over TLS" in tls_bridge.engine.logbook.newest()[-1].detail  # the start row says how it listens


def test_plain_dicom_to_the_tls_port_is_refused_and_logged(tls_bridge, pki, tmp_path):
    files = make_study(tmp_path / "s", count=1).files
    plain = _storescu(tls_bridge.port, files)
    assert plain.returncode != 0
    assert any("plain DICOM to the TLS port" in w for w in _warnings(tls_bridge)), _warnings(tls_bridge)
    assert list(tls_bridge.engine.layout.spool.rglob("*.dcm")) == []
    assert _storescu(tls_bridge.port, files, *_client_tls(pki)).returncode == 0  # still serving


def test_a_sender_without_a_client_certificate_is_refused(tls_bridge, pki, tmp_path):
    files = make_study(tmp_path / "s", count=1).files
    anonymous = _storescu(tls_bridge.port, files, "+tla", "+cf", str(pki.ca))
    assert anonymous.returncode != 0
    assert any("presented no client certificate" in w for w in _warnings(tls_bridge)), _warnings(tls_bridge)
    assert list(tls_bridge.engine.layout.spool.rglob("*.dcm")) == []


def test_a_sender_that_does_not_trust_our_certificate_is_told_apart(tls_bridge, pki, tmp_path):
    files = make_study(tmp_path / "s", count=1).files
    distrustful = _storescu(tls_bridge.port, files, "+tls", str(pki.client.key), str(pki.client.cert),
                            "+cf", str(pki.other_ca))
    assert distrustful.returncode != 0 and "certificate verify failed" in distrustful.stderr
    assert any("does not trust our certificate" in w for w in _warnings(tls_bridge)), _warnings(tls_bridge)


def test_a_silent_client_does_not_block_other_senders(tls_bridge, pki, tmp_path):
    """The handshake runs on the connection's thread, not in the listener's accept loop."""
    files = make_study(tmp_path / "s", count=1).files
    with socket.create_connection(("127.0.0.1", tls_bridge.port), timeout=10):
        result = _storescu(tls_bridge.port, files, "-to", "10", *_client_tls(pki))
    assert result.returncode == 0, result.stderr


@pytest.fixture
def tls_storescp(tmp_path, pki):
    scp = StoreSCP(tmp_path / "scp", extra_args=("+tls", str(pki.server.key), str(pki.server.cert),
                                                  "+cf", str(pki.ca)))  # DCMTK requires a client certificate
    yield scp
    scp.stop()


def test_outbox_sends_over_tls_to_dcmtk_storescp(bridge_settings, pki, tls_storescp, tmp_path):
    files = make_study(tmp_path / "study", count=3).files
    settings = sending_settings(bridge_settings, tls_storescp.port, tls_storescp.aet, send_tls=True,
                                send_tls_ca=str(pki.ca), send_tls_cert=str(pki.client.cert),
                                send_tls_key=str(pki.client.key))
    bridge = SendingBridge(settings)
    try:
        bridge.drop(zip_of(files))
        (done,) = bridge.wait_done()
        assert done.status == SUCCESS, bridge.engine.logbook.newest()[0].detail
        received = {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in tls_storescp.folder.iterdir()}
        assert received == {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in files}
    finally:
        bridge.engine.stop(grace_seconds=2)


def test_echo_checks_the_pacs_certificate(pki, tls_storescp, tmp_path):
    common = dict(send__host="127.0.0.1", send__port=tls_storescp.port, send__ae_title_receiver=tls_storescp.aet,
                  send__tls=True, send__tls_cert=str(pki.client.cert), send__tls_key=str(pki.client.key))
    trusted = echo_command(write_config(tmp_path / "ok.toml", send__tls_ca=str(pki.ca), **common))
    assert trusted.returncode == 0, trusted.stderr
    untrusted = echo_command(write_config(tmp_path / "bad.toml", send__tls_ca=str(pki.other_ca), **common))
    assert untrusted.returncode != 0
    assert "TLS handshake" in untrusted.stderr and "certificate verify failed" in untrusted.stderr
    plain = echo_command(write_config(tmp_path / "plain.toml", **{**common, "send__tls": False}))
    assert plain.returncode != 0


def test_tls_settings_that_do_not_fit_are_refused_with_the_file_named(pki, tmp_path):
    with pytest.raises(SettingsError, match="receive.tls_cert is empty"):
        load_settings(write_config(tmp_path / "a.toml", receive__tls_ca=str(pki.ca)))
    with pytest.raises(SettingsError, match="not belonging|belonging to the certificate"):
        load_settings(write_config(tmp_path / "b.toml", receive__tls_cert=str(pki.server.cert),
                                   receive__tls_key=str(pki.client.key)))
    with pytest.raises(SettingsError, match="existing PEM file"):
        load_settings(write_config(tmp_path / "c.toml", send__tls_ca=str(tmp_path / "missing.pem")))
    with pytest.raises(SettingsError, match="send.tls_ca: cannot load CA"):
        load_settings(write_config(tmp_path / "d.toml", send__tls=True, send__tls_ca=str(tmp_path / "a.toml")))
    good = load_settings(write_config(tmp_path / "e.toml", receive__tls_cert=str(pki.server.cert),
                                      receive__tls_key=str(pki.server.key)))
    assert good.receive_tls_cert == str(pki.server.cert)


def test_no_key_material_reaches_the_logs(tls_bridge, pki, tmp_path):
    files = make_study(tmp_path / "s", count=1).files
    _storescu(tls_bridge.port, files)  # a refused plain sender: an error path is logged too
    assert _storescu(tls_bridge.port, files, *_client_tls(pki)).returncode == 0
    tls_bridge.wait_routed()
    key_lines = [line for line in pki.server.key.read_text().splitlines() if line and "-----" not in line]
    logged = tls_bridge.engine.layout.text_log.read_text() + "\n".join(
        f"{row.detail} {row.target}" for row in tls_bridge.engine.logbook.newest())
    assert "PRIVATE KEY" not in logged and not [line for line in key_lines if line in logged]
