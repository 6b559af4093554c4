"""Images left in ``.bridge/incoming/`` by an earlier run: whole ones are filed, partial ones deleted.

With ``receive.sync_before_ack`` the answer waits for the image's data on disk, not for its
rename into the study's spool folder (a second journal commit per image). After a power cut an
acknowledged image may therefore still sit in ``incoming/``, whole and synced: start-up must file
it into its study (and so into the study's ZIP), and still delete what never arrived whole.
"""

from __future__ import annotations

import zipfile
from dataclasses import replace
from pathlib import Path

from pydicom import dcmread

from bridge.aggregator import Aggregator
from bridge.events import LogBookEntryAdded, StudyRouted
from bridge.layout import StorageLayout
from bridge.logbook import RECEIVE
from bridge.receiver import file_incoming

from .conftest import start_running_bridge
from .studies import make_study


def _leave_in_incoming(layout: StorageLayout, study_folder: Path) -> Path:
    """What a crash can leave: a whole image, the same cut short, bytes that are no DICOM, an
    image without a Study Instance UID, a folder; and a link to a whole image elsewhere.
    Returns the whole image's original (the link points to it)."""
    whole = make_study(study_folder / "whole", count=1).files[0]
    no_study = make_study(study_folder / "no_study", count=1, customize=lambda ds: delattr(ds, "StudyInstanceUID"))
    (layout.incoming / "tmpwhole.dcm").write_bytes(whole.read_bytes())
    (layout.incoming / "tmpcut.dcm").write_bytes(whole.read_bytes()[:-1000])
    (layout.incoming / "tmpgarbage.dcm").write_bytes(b"\0" * 200)
    (layout.incoming / "tmpnostudy.dcm").write_bytes(no_study.files[0].read_bytes())
    (layout.incoming / "tmpfolder").mkdir()
    (layout.incoming / "tmplink.dcm").symlink_to(whole)  # never followed: the image elsewhere stays out
    return whole


def test_start_up_files_whole_images_and_deletes_the_rest(tmp_path):
    layout = StorageLayout(tmp_path / "store")
    layout.ensure()
    original = _leave_in_incoming(layout, tmp_path / "made")
    whole = dcmread(original)
    aggregator = Aggregator(spool=layout.spool, quiet_seconds=lambda: 60)

    result = file_incoming(layout, aggregator)

    assert (result.filed, result.removed) == (1, 5)
    assert list(layout.incoming.iterdir()) == []
    assert original.exists()  # the link's target was not moved into the study
    (pending,) = aggregator.pending()
    assert pending.key == whole.StudyInstanceUID
    assert list(pending.files) == [whole.SOPInstanceUID]
    assert pending.files[whole.SOPInstanceUID].read_bytes() == original.read_bytes()


def test_an_image_left_in_incoming_joins_its_study_and_its_zip(bridge_settings, tmp_path):
    """The study's other images are in its spool folder (renamed before the cut); the one left in
    incoming/ is filed beside them and the one ZIP holds all three."""
    settings = replace(bridge_settings, receive_timeout_seconds=1)
    study = make_study(tmp_path / "study", count=3)
    layout = StorageLayout(settings.storage_folder)
    layout.ensure()
    folder = layout.spool / f"{study.uid}~1"
    folder.mkdir()
    for path in study.files[:2]:
        (folder / f"{dcmread(path).SOPInstanceUID}.dcm").write_bytes(path.read_bytes())
    (layout.incoming / "tmpleft.dcm").write_bytes(study.files[2].read_bytes())

    running = start_running_bridge(settings)
    try:
        routed = running.wait_for(lambda e: isinstance(e, StudyRouted), timeout=60)
        assert isinstance(routed, StudyRouted)
        rows = [row.detail for row in running.engine.logbook.newest() if row.action == RECEIVE]
    finally:
        running.engine.stop(grace_seconds=2)
    with zipfile.ZipFile(routed.target) as archive:
        names = [name for name in archive.namelist() if name.endswith(".dcm")]
        sops = {dcmread(archive.open(name)).SOPInstanceUID for name in names}
    assert sops == {dcmread(path).SOPInstanceUID for path in study.files}
    assert any("resumed 1 pending studies (3 images, 1 of them not yet filed when it stopped)" in row
               for row in rows), rows
    assert list(layout.incoming.iterdir()) == []


def test_an_image_that_cannot_be_filed_stays_and_the_log_book_says_so(bridge_settings, tmp_path, monkeypatch):
    """A full disk at start-up: the whole image is neither filed nor lost; it waits in incoming/
    for the next start, and the admin is told (needs attention)."""
    import errno

    def disk_full(*_args, **_kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    layout = StorageLayout(bridge_settings.storage_folder)
    layout.ensure()
    left = layout.incoming / "tmpleft.dcm"
    left.write_bytes(make_study(tmp_path / "study", count=1).files[0].read_bytes())
    monkeypatch.setattr(Aggregator, "store", disk_full)
    running = start_running_bridge(bridge_settings)
    try:
        added = running.wait_for(lambda e: isinstance(e, LogBookEntryAdded) and e.entry is not None
                                 and "neither filed" in e.entry.detail,
                                 timeout=30)
    finally:
        running.engine.stop(grace_seconds=2)
    assert left.exists()
    assert isinstance(added, LogBookEntryAdded)
    row = added.entry
    assert row.action == RECEIVE and row.needs_attention  # mailed like a failure
    assert "No space left on device" in row.detail and "next start" in row.detail
