"""Allowed senders: unknown calling AE titles and hosts are refused, known ones accepted, all logged."""

import subprocess
from dataclasses import replace

from bridge.engine import Engine
from bridge.logbook import WARNING

from .peers import PEER_ENV, dcmtk
from .studies import make_study


def _store(port: int, calling: str, files, called: str = "CRYPE_DCM") -> subprocess.CompletedProcess[str]:
    return subprocess.run([dcmtk("storescu"), "-aet", calling, "-aec", called, "-R", "127.0.0.1", str(port),
                           *map(str, files)], capture_output=True, text=True, timeout=60, env=PEER_ENV)


def _engine(settings):
    engine = Engine(settings, bind_address="127.0.0.1")
    engine.start()
    return engine


def test_unknown_calling_ae_is_rejected_and_a_known_one_accepted(bridge_settings, tmp_path):
    engine = _engine(replace(bridge_settings, receive_allowed_calling_ae_titles=("MODALITY1",),
                                     receive_check_called_ae_title=True))
    try:
        files = make_study(tmp_path / "s", count=1).files
        refused = _store(engine.settings.receive_port, "OTHER", files)
        assert refused.returncode != 0 and "Association Rejected" in refused.stderr
        wrong_called = _store(engine.settings.receive_port, "MODALITY1", files, called="NOT_US")
        assert wrong_called.returncode != 0 and "Association Rejected" in wrong_called.stderr
        accepted = _store(engine.settings.receive_port, "MODALITY1", files)
        assert accepted.returncode == 0, accepted.stderr
        rows = engine.logbook.newest()
        rejected = [r for r in rows if r.status == WARNING and "rejected" in r.detail]
        assert any("OTHER" in r.detail for r in rejected) and any("NOT_US" in r.detail for r in rejected)
        assert list(engine.layout.spool.rglob("*.dcm"))  # the known sender's image arrived
    finally:
        engine.stop(grace_seconds=2)


def test_hosts_outside_the_list_are_refused(bridge_settings, tmp_path):
    files = make_study(tmp_path / "s", count=1).files
    engine = _engine(replace(bridge_settings, receive_allowed_hosts=("127.0.0.2",)))
    try:
        refused = _store(engine.settings.receive_port, "ANY", files)
        assert refused.returncode != 0
        assert any("127.0.0.1 refused" in r.detail for r in engine.logbook.newest())
    finally:
        engine.stop(grace_seconds=2)
    engine = _engine(replace(bridge_settings, receive_allowed_hosts=("localhost",)))
    try:
        assert _store(engine.settings.receive_port, "ANY", files).returncode == 0
    finally:
        engine.stop(grace_seconds=2)
