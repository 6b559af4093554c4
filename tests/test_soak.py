"""Soak (bounded, about a minute): 4 DCMTK senders at once, hundreds of studies, the outbox sending
to Orthanc at the same time. Afterwards every instance is accounted for and memory stayed flat.

Marked ``soak``: skip it in quick runs with ``-m "not soak"``; CI runs it.
"""

from __future__ import annotations

import io
import subprocess
import time
import zipfile
from pathlib import Path

import pytest
from pydicom import dcmread

from .conftest import free_port
from .pacs import Orthanc
from .peers import PEER_ENV, storescu_args
from .studies import make_study
from .test_headless import HeadlessBridge, _config

SENDERS = 4
STUDIES_PER_SENDER = 50
IMAGES_PER_STUDY = 3
OUTBOX_ZIPS = 20


def _rss_mb(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no {field} for {pid}")


def _sops_in(zip_path: Path) -> list[str]:
    with zipfile.ZipFile(zip_path) as archive:
        return [str(dcmread(io.BytesIO(archive.read(name)), stop_before_pixels=True).SOPInstanceUID)
                for name in archive.namelist()]


@pytest.mark.soak
def test_parallel_senders_and_outbox_for_a_while(tmp_path):
    orthanc = Orthanc(tmp_path / "orthanc")
    port = free_port()
    folders, sent = [], set()
    for sender in range(SENDERS):
        folder = tmp_path / f"sender{sender}"
        for number in range(STUDIES_PER_SENDER):
            study = make_study(folder / f"s{number}", count=IMAGES_PER_STUDY, patient_name=f"SOAK^P{sender}_{number}")
            sent.update(str(dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in study.files)
        folders.append(folder)
    outbox_files = make_study(tmp_path / "outbox", count=OUTBOX_ZIPS * 2).files
    bridge = HeadlessBridge(_config(tmp_path, port, receive__timeout_seconds=2, send__enabled=True,
                                    send__host="127.0.0.1", send__port=orthanc.port,
                                    send__ae_title_receiver=orthanc.aet))
    store = tmp_path / "store"
    try:
        bridge.wait_for_line("running headless")
        rss_start = _rss_mb(bridge.process.pid, "VmRSS")
        senders = [subprocess.Popen(storescu_args("CRYPE_DCM", port, [str(folder)], "+sd", "+r", "-R"),
                                    env=PEER_ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                   for folder in folders]
        for number in range(OUTBOX_ZIPS):
            staged = store / f".drop{number}.zip"
            with zipfile.ZipFile(staged, "w") as archive:
                for path in outbox_files[number * 2 : number * 2 + 2]:
                    archive.write(path, path.name)
            staged.rename(store / "Outbox_Auto" / f"reply{number}.zip")
        for process in senders:
            _, err = process.communicate(timeout=120)
            assert process.returncode == 0, err
        expected_zips = SENDERS * STUDIES_PER_SENDER
        deadline = time.monotonic() + 120
        while (len(list((store / "Inbox_Auto").glob("*.zip"))) + len(list((store / "Inbox_Manual").glob("*.zip")))
               < expected_zips or any((store / "Outbox_Auto").iterdir())
               or any((store / ".bridge" / "outbox").iterdir())):
            assert time.monotonic() < deadline, "the bridge did not catch up within 2 minutes"
            time.sleep(0.2)  # another process's folders: nothing to await but their contents
        rss_end = _rss_mb(bridge.process.pid, "VmRSS")
        peak = _rss_mb(bridge.process.pid, "VmHWM")
    finally:
        assert bridge.stop(timeout=60) == 0
        stored_in_orthanc = set(orthanc.sop_uids())
        orthanc.stop()
    zips = list((store / "Inbox_Manual").glob("*.zip"))
    assert len(zips) == expected_zips
    received = [sop for zip_path in zips for sop in _sops_in(zip_path)]
    assert len(received) == len(set(received)) and set(received) == sent  # each exactly once
    assert stored_in_orthanc == {str(dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in outbox_files}
    assert list((store / "Inbox_Failed").iterdir()) == [] and list((store / "Outbox_Failed").iterdir()) == []
    assert peak < 200 and rss_end < rss_start + 60, (rss_start, rss_end, peak)
