"""E-mail notifications (issue #6) into a real SMTP server on loopback (aiosmtpd)."""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import sys
from dataclasses import replace

import pytest

from bridge.engine import Engine
from bridge.events import LogBookEntryAdded, MailQueued, OutboxZipDone
from bridge.logbook import SERVICE, SUCCESS, WARNING

from .conftest import RunningBridge, free_port, start_running_bridge, write_config
from .misbehaving_pacs import MisbehavingPacs
from .pacs import StoreSCP
from .peers import run_storescu
from .smtp import MailServer, text_of
from .studies import make_study, send_raw, unreadable_dataset
from .test_send import zip_of

PATIENT = "HOLTZMANN, Carsten"  # the name in pydicom's CT sample, as the log book writes it


@pytest.fixture
def smtp_port() -> int:
    return free_port()


@pytest.fixture
def mail_server(smtp_port):
    server = MailServer(smtp_port)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def refusing_pacs():
    """A PACS that refuses every image (0xC000): a ZIP fails at once (an unreachable one is waited out)."""
    pacs = MisbehavingPacs(lambda uid, n: 0xC000)
    yield pacs
    pacs.stop()


@pytest.fixture
def notify_settings(refusing_pacs):
    def settings(bridge_settings, smtp_port: int, **changes):
        """Failures mailed to IT through a plain loopback SMTP; Outbox_Auto sends to a PACS refusing all."""
        defaults = dict(notify_enabled=True, notify_smtp_host="127.0.0.1", notify_smtp_port=smtp_port,
                        notify_smtp_security="none", notify_recipients=("it@practice.example",),
                        notify_gather_seconds=1, send_enabled=True, send_host="127.0.0.1",
                        send_port=refusing_pacs.port, send_retries=0)
        return replace(bridge_settings, **{**defaults, **changes})

    return settings


@pytest.fixture
def start_bridge():
    started = []

    def start(settings) -> RunningBridge:
        running = start_running_bridge(settings)
        started.append(running.engine)
        return running

    yield start
    for engine in started:
        engine.stop(grace_seconds=2)


def _fail_a_zip(running: RunningBridge, tmp_path) -> None:
    files = make_study(tmp_path / "outgoing", count=2).files
    (running.storage / "Outbox_Auto" / "outgoing.zip").write_bytes(zip_of(files))
    running.wait_for(lambda e: isinstance(e, OutboxZipDone))


def test_failures_are_mailed_one_each_and_successes_are_not(notify_settings, bridge_settings, smtp_port, mail_server,
                                                             start_bridge, tmp_path):
    running = start_bridge(notify_settings(bridge_settings, smtp_port, notify_no_phi=False))  # patient data asked for
    run_storescu(running.port, [str(f) for f in make_study(tmp_path / "good", count=2).files])
    running.wait_routed()  # zipped into Inbox_Manual: no mail for a success
    crafted, meta = unreadable_dataset(tmp_path / "broken.dcm")
    assert send_raw(running.port, crafted, meta) == 0xC000  # -> Inbox_Failed
    _fail_a_zip(running, tmp_path)  # -> Outbox_Failed
    mails = [mail_server.next_mail(), mail_server.next_mail()]
    subjects = [str(m["Subject"]) for m in mails]
    assert sorted("Inbox_Failed" in s for s in subjects) == [False, True], subjects
    outbox_mail = next(m for m in mails if "Outbox_Failed" in str(m["Subject"]))
    body = text_of(outbox_mail)
    assert PATIENT in body and "Images:      2" in body and "0xC000 cannot understand" in body
    assert PATIENT not in str(outbox_mail["Subject"])
    inbox_mail = next(m for m in mails if "Inbox_Failed" in str(m["Subject"]))
    assert "not readable DICOM" in text_of(inbox_mail) and "unreadable_" in text_of(inbox_mail)
    running.engine.stop(grace_seconds=2)  # the last delivery happens at the stop: nothing more came
    assert mail_server.mails_now() == []


def test_arrivals_are_mailed_per_study_when_switched_on(notify_settings, bridge_settings, smtp_port,
                                                        mail_server, start_bridge,
                                                         tmp_path):
    running = start_bridge(notify_settings(bridge_settings, smtp_port, notify_on_arrival=True, notify_no_phi=False))
    run_storescu(running.port, [str(f) for f in make_study(tmp_path / "a", count=3).files])
    mail = mail_server.next_mail()
    assert "Arrived: CT" in str(mail["Subject"]) and "3 images in Inbox_Manual" in str(mail["Subject"])
    assert PATIENT in text_of(mail) and "Inbox_Manual" in text_of(mail)


def test_by_default_no_mail_names_the_patient(notify_settings, bridge_settings, smtp_port, mail_server,
                                              start_bridge, tmp_path):
    assert bridge_settings.notify_no_phi  # the default, as in mercure (phi_notifications: false)
    running = start_bridge(notify_settings(bridge_settings, smtp_port, notify_on_arrival=True))
    run_storescu(running.port, [str(f) for f in make_study(tmp_path / "a", count=2).files])
    running.wait_routed()
    _fail_a_zip(running, tmp_path)
    mails = [mail_server.next_mail(), mail_server.next_mail()]
    for mail in mails:
        text = text_of(mail)
        assert "HOLTZMANN" not in text and "1929" not in text, text  # name and birth year
        assert "Study date:" in text and "Modality:    CT" in text
    assert {"Arrived", "Failed"} == {str(m["Subject"]).split("] ")[1].split(":")[0] for m in mails}


def test_a_burst_of_failures_is_one_summary_mail(notify_settings, bridge_settings, smtp_port, mail_server,
                                                 start_bridge, tmp_path):
    running = start_bridge(notify_settings(bridge_settings, smtp_port, notify_gather_seconds=5))
    files = make_study(tmp_path / "outgoing", count=1).files
    for number in range(6):
        (running.storage / "Outbox_Auto" / f"z{number}.zip").write_bytes(zip_of(files))
    for _ in range(6):
        running.wait_for(lambda e: isinstance(e, OutboxZipDone))
    mail = mail_server.next_mail()
    assert "6 failures" in str(mail["Subject"])
    assert text_of(mail).count("What:        ZIP not sent, in Outbox_Failed") == 6
    running.engine.stop(grace_seconds=2)
    assert mail_server.mails_now() == []


def test_mail_server_down_never_blocks_and_the_mail_goes_out_when_it_is_back(notify_settings,
                                                                             bridge_settings, smtp_port,
                                                                              start_bridge, tmp_path):
    scp = StoreSCP(tmp_path / "pacs")
    try:
        running = start_bridge(notify_settings(bridge_settings, smtp_port, send_port=scp.port,
                                               send_ae_title_receiver=scp.aet))
        running.engine.notifier.retry_seconds = 0.5
        crafted, meta = unreadable_dataset(tmp_path / "broken.dcm")
        assert send_raw(running.port, crafted, meta) == 0xC000  # -> Inbox_Failed -> a mail to send
        running.wait_for(lambda e: isinstance(e, LogBookEntryAdded) and e.status == WARNING and e.action == SERVICE)
        assert "notification mail not sent: cannot reach mail server" in running.engine.logbook.newest()[0].detail
        run_storescu(running.port, [str(f) for f in make_study(tmp_path / "b", count=2).files])
        running.wait_routed()  # receiving goes on while the mail server is down
        outgoing = make_study(tmp_path / "out", count=2).files
        (running.storage / "Outbox_Auto" / "out.zip").write_bytes(zip_of(outgoing))
        sent = running.wait_for(lambda e: isinstance(e, OutboxZipDone))
        assert sent.status == SUCCESS and len(list(scp.folder.iterdir())) == 2  # and so does sending
        assert len(running.engine.notifier.queued()) == 1  # the mail waits on disk
        server = MailServer(smtp_port)
        try:
            assert "Inbox_Failed" in str(server.next_mail()["Subject"])
            running.wait_for(lambda e: isinstance(e, LogBookEntryAdded) and e.entry is not None
                      and "delivered again" in e.entry.detail)
            assert running.engine.notifier.queued() == []
        finally:
            server.stop()
    finally:
        scp.stop()


def test_queued_mails_survive_a_restart_as_one_digest(notify_settings, bridge_settings, smtp_port,
                                                      start_bridge, tmp_path):
    settings = notify_settings(bridge_settings, smtp_port, notify_gather_seconds=1)
    running = start_bridge(settings)
    for number in range(4):  # four gathering windows, four queued mails
        _fail_a_zip(running, tmp_path / str(number))
        queued = running.wait_for(lambda e: isinstance(e, MailQueued))
        assert queued.waiting == number + 1
    running.engine.stop(grace_seconds=2)
    assert len(list((running.storage / ".bridge" / "mail").glob("*.eml"))) == 1  # merged at the last try
    server = MailServer(smtp_port)
    try:
        start_bridge(replace(settings, send_enabled=False))
        mail = server.next_mail()
        assert "delayed notifications" in str(mail["Subject"])
        assert text_of(mail).count("Outbox_Failed") >= 4
    finally:
        server.stop()


def test_password_from_a_file_logs_in_and_is_never_logged(notify_settings, bridge_settings, smtp_port,
                                                          start_bridge, tmp_path):
    secret = "s3cret-Passw0rd"
    password_file = tmp_path / "smtp-password"
    password_file.write_text(secret + "\n")
    server = MailServer(smtp_port, login=("bridge", secret))
    try:
        running = start_bridge(notify_settings(bridge_settings, smtp_port, notify_smtp_user="bridge",
                                               notify_smtp_password_file=str(password_file)))
        _fail_a_zip(running, tmp_path)
        server.next_mail()
        assert server.logins == ["ok"]
        running.engine.notifier.retry_seconds = 0.5
        password_file.write_text("wrong\n")
        _fail_a_zip(running, tmp_path / "again")
        running.wait_for(lambda e: isinstance(e, LogBookEntryAdded) and e.entry is not None
                  and "refused the login of 'bridge'" in e.entry.detail)
        logged = running.engine.layout.text_log.read_text() + "".join(
            r.detail for r in running.engine.logbook.newest())
        assert secret not in logged
        assert secret not in repr(running.engine.settings)
    finally:
        server.stop()


def _test_mail(config, **env) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bridge.cli", "test-mail", "--config", str(config)],
                          capture_output=True, text=True, timeout=60, env={**os.environ, **env})


def test_test_mail_command_with_starttls_and_against_a_closed_port(tmp_path):
    from .pki import make_pki

    pki = make_pki(tmp_path / "pki")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki.server.cert, pki.server.key)
    port = free_port()
    server = MailServer(port, login=("bridge", "pw"), tls_context=context)
    try:
        config = write_config(tmp_path / "c.toml", notify__smtp_host="127.0.0.1", notify__smtp_port=port,
                              notify__smtp_user="bridge", notify__recipients=["it@practice.example"])
        result = _test_mail(config, SSL_CERT_FILE=str(pki.ca), DICOMBRIDGE_SMTP_PASSWORD="pw")  # STARTTLS
        assert result.returncode == 0, result.stderr
        assert "test mail" in str(server.next_mail()["Subject"]) and server.logins == ["ok"]
        untrusted = _test_mail(config, DICOMBRIDGE_SMTP_PASSWORD="pw")
        assert untrusted.returncode != 0 and "TLS with mail server" in untrusted.stderr
    finally:
        server.stop()
    closed = write_config(tmp_path / "d.toml", notify__smtp_host="127.0.0.1", notify__smtp_port=free_port(),
                          notify__smtp_security="none", notify__recipients=["it@practice.example"])
    result = _test_mail(closed)
    assert result.returncode != 0 and "cannot reach mail server" in result.stderr


def test_enabling_notifications_needs_a_server_and_recipients(tmp_path):
    from bridge.settings import SettingsError, load_settings

    with pytest.raises(SettingsError, match="notify.enabled needs"):
        load_settings(write_config(tmp_path / "c.toml", notify__enabled=True))
    with pytest.raises(SettingsError, match="e-mail address"):
        load_settings(write_config(tmp_path / "d.toml", notify__recipients=["not an address"]))



def test_which_rows_are_mailed(notify_settings, bridge_settings):
    from bridge.logbook import FAILED, INFO, RECEIVE, SEND, SUCCESS, LogEntry
    from bridge.mail_text import ARRIVAL, FAILURE
    from bridge.notifier import notice_for

    settings = notify_settings(bridge_settings, 25)

    def kind(entry, **changes):
        notice = notice_for(entry, replace(settings, **changes))
        return notice.kind if notice else None

    not_listening = LogEntry(action=SERVICE, status=FAILED, detail="cannot listen on port 104")
    disk_floor = LogEntry(action=RECEIVE, status=WARNING, detail="free space below", needs_attention=True)
    refused_sender = LogEntry(action=RECEIVE, status=WARNING, detail="association from X rejected")
    arrival = LogEntry(action=RECEIVE, status=SUCCESS, target="/s/Inbox_Auto/a.zip")
    assert kind(not_listening) == FAILURE and kind(disk_floor) == FAILURE
    assert kind(refused_sender) is None and kind(LogEntry(action=SERVICE, status=INFO)) is None
    assert kind(arrival) is None and kind(arrival, notify_on_arrival=True) == ARRIVAL
    assert kind(LogEntry(action=SEND, status=FAILED), notify_on_failure=False) is None
    assert kind(not_listening, notify_enabled=False) is None


def test_a_receiver_that_cannot_listen_is_mailed(notify_settings, bridge_settings, smtp_port, mail_server, tmp_path):
    from bridge.receiver import ReceiverStartError

    with socket.socket() as squatter:  # another program holds the port
        squatter.bind(("127.0.0.1", bridge_settings.receive_port))
        squatter.listen()
        engine = Engine(notify_settings(bridge_settings, smtp_port, send_enabled=False), bind_address="127.0.0.1")
        try:
            with pytest.raises(ReceiverStartError):
                engine.start()
            mail = mail_server.next_mail()
            assert "bridge not working as configured" in str(mail["Subject"])
            assert f"cannot listen on port {bridge_settings.receive_port}" in text_of(mail)
        finally:
            engine.stop(grace_seconds=1)


def test_reaching_the_free_space_floor_is_mailed(notify_settings, bridge_settings, smtp_port, mail_server,
                                                 start_bridge, tmp_path):
    # no disk has 1 TB free here
    running = start_bridge(notify_settings(bridge_settings, smtp_port, min_free_mb=1_000_000))
    files = [str(f) for f in make_study(tmp_path / "s", count=1).files]
    result = run_storescu(running.port, files, check=False)
    assert result.returncode != 0 and list(running.engine.layout.spool.rglob("*.dcm")) == []  # refused (0xA700)
    mail = mail_server.next_mail()
    assert "receiving needs attention" in str(mail["Subject"]) and "below 1000000 MB" in text_of(mail)


def test_a_digest_that_cannot_be_written_keeps_its_parts(notify_settings, bridge_settings, smtp_port, tmp_path):
    import threading

    from bridge.events import EventBus
    from bridge.layout import StorageLayout
    from bridge.logbook import LogBook
    from bridge.mail import new_message
    from bridge.notifier import Notifier

    settings = notify_settings(bridge_settings, smtp_port)
    layout = StorageLayout(tmp_path / "store")
    layout.ensure()
    for number in range(4):
        (layout.mail_queue / f"{number}.eml").write_bytes(new_message(settings, f"mail {number}", "body").as_bytes())
    notifier = Notifier(layout, LogBook(layout.logbook_db), EventBus(), lambda: settings, threading.Event())
    notifier._enqueue = lambda data: None  # the disk refuses the digest
    parts = notifier.queued()
    assert notifier._digest(parts, settings) == parts and all(path.exists() for path in parts)
