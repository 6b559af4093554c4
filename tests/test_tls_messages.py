"""TLS messages that point at the cause (issue 13): expired certificates called expired, both
ways; a PACS refusing our client certificate says so; a warning at start for our own certificate."""

from __future__ import annotations

from dataclasses import replace

import pytest

from bridge.logbook import WARNING
from bridge.tls import certificate_warnings

from .conftest import start_running_bridge, write_config
from .pacs import StoreSCP
from .pki import issue_expired, make_pki
from .studies import make_study
from .test_send import echo_command
from .test_tls import _storescu


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def expired(pki):
    folder = pki.ca.parent
    return {"server": issue_expired(folder, "old-server", pki.ca, "serverAuth"),
            "client": issue_expired(folder, "old-client", pki.ca, "clientAuth")}


def _echo(tmp_path, scp, pki, cert, key, name="c.toml"):
    config = write_config(tmp_path / name, send__host="127.0.0.1", send__port=scp.port,
                          send__ae_title_receiver=scp.aet, send__tls=True, send__tls_ca=str(pki.ca),
                          send__tls_cert=str(cert), send__tls_key=str(key))
    return echo_command(config)


def test_a_pacs_with_an_expired_certificate_is_called_expired(pki, expired, tmp_path):
    scp = StoreSCP(tmp_path / "scp", extra_args=("+tls", str(expired["server"].key), str(expired["server"].cert),
                                                  "+cf", str(pki.ca)))
    try:
        result = _echo(tmp_path, scp, pki, pki.client.cert, pki.client.key)
    finally:
        scp.stop()
    assert result.returncode != 0
    assert "the PACS certificate has expired" in result.stderr, result.stderr


def test_a_pacs_refusing_our_expired_client_certificate_says_so(pki, expired, tmp_path):
    scp = StoreSCP(tmp_path / "scp", extra_args=("+tls", str(pki.server.key), str(pki.server.cert),
                                                  "+cf", str(pki.ca)))
    try:
        result = _echo(tmp_path, scp, pki, expired["client"].cert, expired["client"].key)
    finally:
        scp.stop()
    assert result.returncode != 0
    assert "our client certificate (send.tls_cert) has expired" in result.stderr, result.stderr


def test_a_pacs_that_does_not_accept_our_client_certificate_says_so(pki, tmp_path):
    other = make_pki(tmp_path / "other")  # a client certificate from a CA the PACS does not trust
    scp = StoreSCP(tmp_path / "scp", extra_args=("+tls", str(pki.server.key), str(pki.server.cert),
                                                  "+cf", str(pki.ca)))
    try:
        result = _echo(tmp_path, scp, pki, other.client.cert, other.client.key)
    finally:
        scp.stop()
    assert result.returncode != 0
    assert "does not accept our client certificate" in result.stderr, result.stderr


def test_a_sender_with_an_expired_certificate_is_called_expired(bridge_settings, pki, expired, tmp_path):
    running = start_running_bridge(replace(bridge_settings, receive_tls_cert=str(pki.server.cert),
                                           receive_tls_key=str(pki.server.key), receive_tls_ca=str(pki.ca)))
    try:
        files = make_study(tmp_path / "s", count=1).files
        result = _storescu(running.port, files, "+tls", str(expired["client"].key), str(expired["client"].cert),
                           "+cf", str(pki.ca))
        assert result.returncode != 0
        warnings = [row.detail for row in running.engine.logbook.newest() if row.status == WARNING]
        assert any("the sender's certificate has expired" in w for w in warnings), warnings
    finally:
        running.engine.stop(grace_seconds=2)


def test_the_bridge_warns_at_start_about_its_own_certificates(bridge_settings, pki, expired):
    running = start_running_bridge(replace(bridge_settings, receive_tls_cert=str(pki.server.cert),
                                           receive_tls_key=str(pki.server.key), send_tls=True,
                                           send_tls_cert=str(expired["client"].cert),
                                           send_tls_key=str(expired["client"].key)))
    try:
        rows = [row for row in running.engine.logbook.newest() if row.status == WARNING]
        details = [row.detail for row in rows]
        assert any(d.startswith("receive.tls_cert") and "(in 2 days)" in d for d in details), details
        assert any(d.startswith("send.tls_cert") and "expired on" in d for d in details), details
    finally:
        running.engine.stop(grace_seconds=2)
    assert certificate_warnings({"receive.tls_cert": str(pki.server.cert)}, now=0) == []  # far from expiry

