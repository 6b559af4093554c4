"""``dicombridge echo`` / ``send`` exit codes tell failures apart (like DCMTK's dcmsend), each
proven against a real peer: DCMTK storescp (accepting, ``--refuse``, ``+xi``, ``--abort-after``),
a closed port, a raw socket that aborts."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from bridge import exit_codes
from bridge.headless import EXIT_START_FAILED

from .conftest import free_port, write_config
from .pacs import AbortingPeer, StoreSCP
from .peers import PEER_ENV, dcmtk
from .studies import CT, IMPLICIT, make_study


def dicombridge(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dicombridge", *args], capture_output=True, text=True,
                          timeout=timeout)


def pacs_config(tmp_path: Path, port: int, called: str = StoreSCP.aet, **extra) -> Path:
    return write_config(tmp_path / "config.toml", general__storage_folder=str(tmp_path / "store"),
                        send__host="127.0.0.1", send__port=port, send__ae_title_receiver=called, send__retries=0,
                        **extra)


@pytest.fixture
def storescp(tmp_path):
    peers: list[StoreSCP] = []

    def start(*extra_args: str) -> StoreSCP:
        peer = StoreSCP(tmp_path / f"received{len(peers)}", extra_args=extra_args)
        peers.append(peer)
        return peer

    yield start
    for peer in peers:
        peer.stop()


@pytest.fixture
def aborting_peer():
    peer = AbortingPeer()
    yield peer
    peer.stop()


def mixed_syntax_study(folder: Path) -> list[Path]:
    """One explicit-VR CT and one implicit-VR MR of one study."""
    first = make_study(folder, count=1, sample=CT)
    return first.files + make_study(folder, count=1, sample=IMPLICIT, study_uid=first.uid).files


# echo


def test_echo_succeeds_against_storescp_and_verbose_shows_the_exchange(storescp, tmp_path):
    peer = storescp()
    result = dicombridge("echo", "-v", "--config", str(pacs_config(tmp_path, peer.port)))
    assert result.returncode == exit_codes.OK, result.stderr
    assert "succeeded" in result.stdout
    assert "Association Accepted" in result.stderr
    assert "Received Echo Response (Status: 0x0000 - Success)" in result.stderr
    assert "A-ASSOCIATE-RQ PDU" not in result.stderr
    result = dicombridge("echo", "-vv", "--config", str(pacs_config(tmp_path, peer.port)))
    assert result.returncode == exit_codes.OK, result.stderr
    assert "OUTGOING A-ASSOCIATE-RQ PDU" in result.stderr and "OFFIS_DCMTK" in result.stderr  # storescp's answer


def test_echo_to_a_closed_port_cannot_connect(tmp_path):
    result = dicombridge("echo", "--config", str(pacs_config(tmp_path, free_port())))
    assert result.returncode == exit_codes.CANNOT_CONNECT, result.stderr
    assert "no connection to the PACS" in result.stderr


def test_echo_refused_by_storescp_is_a_rejection(storescp, tmp_path):
    peer = storescp("--refuse")
    result = dicombridge("echo", "--config", str(pacs_config(tmp_path, peer.port)))
    assert result.returncode == exit_codes.ASSOCIATION_REJECTED, result.stderr
    assert "rejected the association" in result.stderr


def test_echo_to_a_peer_that_aborts_is_a_dicom_failure(aborting_peer, tmp_path):
    result = dicombridge("echo", "--config", str(pacs_config(tmp_path, aborting_peer.port)))
    assert result.returncode == exit_codes.DICOM_FAILURE, result.stderr
    assert "aborted" in result.stderr
    assert aborting_peer.connections >= 1


def test_echo_without_send_host_is_bad_settings(tmp_path):
    config = write_config(tmp_path / "config.toml", general__storage_folder=str(tmp_path / "store"))
    result = dicombridge("echo", "--config", str(config))
    assert result.returncode == exit_codes.BAD_SETTINGS
    assert "send.host is not set" in result.stderr


@pytest.mark.parametrize("command", [["echo"], ["send", "."], ["test-mail"]])
def test_a_missing_config_file_is_refused_not_created(command, tmp_path):
    config = tmp_path / "new.toml"
    result = dicombridge(*command, "--config", str(config))
    assert result.returncode == exit_codes.BAD_SETTINGS
    assert f"no settings file {config}" in result.stderr
    assert not config.exists()


def test_an_unreadable_config_file_is_bad_settings_with_a_message(tmp_path):
    config = tmp_path / "config.toml"
    config.write_bytes(b"\xff\xfe[general]\n")
    for command in (["echo"], ["--headless"], []):  # [] is the UI: it stops before drawing anything
        result = dicombridge(*command, "--config", str(config))
        assert result.returncode == exit_codes.BAD_SETTINGS, (command, result.stderr)
        assert "cannot be read" in result.stderr


def test_the_ui_with_an_unusable_storage_folder_exits_non_zero_before_drawing(tmp_path):
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")
    config = write_config(tmp_path / "config.toml", general__storage_folder=str(not_a_folder),
                          receive__port=free_port())
    result = dicombridge("--config", str(config))  # the UI's start path, as --headless has
    assert result.returncode == EXIT_START_FAILED, result.stderr
    assert f"storage folder {not_a_folder} is not usable" in result.stderr


# send


def test_send_stores_everything_in_storescp(storescp, tmp_path):
    peer = storescp()
    files = mixed_syntax_study(tmp_path / "study")
    result = dicombridge("send", str(tmp_path / "study"), "--config", str(pacs_config(tmp_path, peer.port)))
    assert result.returncode == exit_codes.OK, result.stderr
    assert len(list(peer.folder.iterdir())) == len(files)


def test_send_verbose_prints_each_store_request_and_response(storescp, tmp_path):
    peer = storescp()
    files = mixed_syntax_study(tmp_path / "study")
    result = dicombridge("send", "-v", str(tmp_path / "study"), "--config", str(pacs_config(tmp_path, peer.port)))
    assert result.returncode == exit_codes.OK, result.stderr
    assert result.stderr.count("Sending Store Request") == len(files)
    assert result.stderr.count("Received Store Response (Status: 0x0000 - Success)") == len(files)
    assert "sending [" not in result.stderr  # no progress bar among the log lines


def test_send_with_images_the_pacs_does_not_accept(storescp, tmp_path):
    peer = storescp("+xi")  # implicit VR little endian only
    ct, _mr = mixed_syntax_study(tmp_path / "study")
    # big endian (retired): not converted, so the CT has no context (explicit VR LE would be converted)
    subprocess.run([dcmtk("dcmconv"), "+tb", str(ct), str(ct)], check=True, env=PEER_ENV, timeout=60)
    result = dicombridge("send", str(tmp_path / "study"), "--config", str(pacs_config(tmp_path, peer.port)))
    assert result.returncode == exit_codes.IMAGES_REFUSED, result.stderr
    assert "sent 1 of 2: 0 with warnings, 1 failed" in result.stdout
    assert "the PACS accepts CT Image Storage in none of the transfer syntaxes" in result.stdout
    assert "Explicit VR Big Endian" in result.stdout
    assert len(list(peer.folder.iterdir())) == 1


def test_send_to_a_closed_port_cannot_connect(tmp_path):
    make_study(tmp_path / "study", count=1)
    result = dicombridge("send", str(tmp_path / "study"), "--config", str(pacs_config(tmp_path, free_port())))
    assert result.returncode == exit_codes.CANNOT_CONNECT, result.stderr
    assert "no connection to the PACS" in result.stderr


def test_send_refused_by_storescp_is_a_rejection(storescp, tmp_path):
    peer = storescp("--refuse")
    make_study(tmp_path / "study", count=1)
    result = dicombridge("send", str(tmp_path / "study"), "--config", str(pacs_config(tmp_path, peer.port)))
    assert result.returncode == exit_codes.ASSOCIATION_REJECTED, result.stderr


def test_send_to_a_peer_that_aborts_is_a_dicom_failure(aborting_peer, tmp_path):
    make_study(tmp_path / "study", count=1)
    config = pacs_config(tmp_path, aborting_peer.port)
    result = dicombridge("send", str(tmp_path / "study"), "--config", str(config))
    assert result.returncode == exit_codes.DICOM_FAILURE, result.stderr
    assert "aborted" in result.stderr


def test_send_aborted_by_storescp_mid_transfer_is_a_dicom_failure(storescp, tmp_path):
    peer = storescp("--abort-after")  # aborts after the first C-STORE request, before answering
    make_study(tmp_path / "study", count=2)
    result = dicombridge("send", str(tmp_path / "study"), "--config", str(pacs_config(tmp_path, peer.port)))
    assert result.returncode == exit_codes.DICOM_FAILURE, result.stderr
    assert "association ended while sending" in result.stderr


@pytest.mark.parametrize("make_input", ["missing", "text file", "empty folder", "unsafe zip"])
def test_send_bad_input(make_input, tmp_path):
    path = tmp_path / "input"
    if make_input == "text file":
        path.write_text("not a zip")
    elif make_input == "empty folder":
        path.mkdir()
        (path / "notes.txt").write_text("no DICOM here")
    elif make_input == "unsafe zip":
        path = tmp_path / "input.zip"
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("../escape.dcm", b"x")
    config = pacs_config(tmp_path, free_port())  # never contacted
    result = dicombridge("send", str(path), "--config", str(config))
    assert result.returncode == exit_codes.BAD_INPUT, result.stderr
    assert {"missing": "no such file or folder", "text file": "neither a folder nor a ZIP",
            "empty folder": "holds no DICOM files", "unsafe zip": "'..' in the path"}[make_input] in result.stderr


def test_help_and_readme_list_the_same_exit_codes():
    readme = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    for command, codes in (("echo", exit_codes.ECHO_CODES), ("send", exit_codes.SEND_CODES)):
        shown = dicombridge(command, "--help").stdout
        for code in codes:
            assert f"{code:>2}  {exit_codes.MEANING[code]}" in shown, (command, code)
    for code in exit_codes.SEND_CODES:
        assert f"| {code} | {exit_codes.MEANING[code]} |" in readme, code
