"""When is a ZIP in Outbox_Auto complete? (bridge.outbox.CompletenessTracker, README "sending" 1.)"""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

from bridge.outbox import INVALID_AFTER_SECONDS, POLL_SECONDS, STABLE_SECONDS, CompletenessTracker

from .fakes import FakeClock


def a_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("series/a.dcm", b"DICM" * 5000)
    return buffer.getvalue()


def dropped(folder: Path, data: bytes, age_seconds: float, wall: FakeClock) -> Path:
    """A file whose time stamp says it was last written ``age_seconds`` before ``wall``'s now."""
    path = folder / "study.zip"
    path.write_bytes(data)
    stamp = int((wall() - age_seconds) * 1e9)
    os.utime(path, ns=(stamp, stamp))
    return path


def tracker() -> tuple[CompletenessTracker, FakeClock, FakeClock]:
    monotonic, wall = FakeClock(100.0), FakeClock()
    return CompletenessTracker(clock=monotonic, wall_clock=wall), monotonic, wall


def test_a_zip_moved_in_long_after_it_was_written_is_taken_at_the_first_look(tmp_path):
    check, _monotonic, wall = tracker()
    path = dropped(tmp_path, a_zip(), age_seconds=60, wall=wall)
    assert check.check([path]) == ([path], [])


def test_a_zip_written_half_a_second_ago_is_taken_at_once_one_written_just_before_is_not(tmp_path):
    check, _monotonic, wall = tracker()
    path = dropped(tmp_path, a_zip(), age_seconds=STABLE_SECONDS - POLL_SECONDS, wall=wall)
    assert check.check([path]) == ([], [])
    wall.advance(POLL_SECONDS)
    assert check.check([path]) == ([path], [])


def test_a_zip_written_just_now_waits_until_the_bridge_saw_it_quiet(tmp_path):
    check, monotonic, wall = tracker()
    path = dropped(tmp_path, a_zip(), age_seconds=0, wall=wall)
    looks = 0
    while not check.check([path])[0]:
        looks += 1
        assert looks < 100
        monotonic.advance(POLL_SECONDS)
        wall.advance(POLL_SECONDS)
    assert looks * POLL_SECONDS >= STABLE_SECONDS - 1e-9


def test_a_time_stamp_in_the_future_does_not_shorten_the_wait(tmp_path):
    check, monotonic, wall = tracker()
    path = dropped(tmp_path, a_zip(), age_seconds=-3600, wall=wall)  # a file server whose clock is ahead
    assert check.check([path]) == ([], [])
    monotonic.advance(STABLE_SECONDS / 2)
    wall.advance(STABLE_SECONDS / 2)
    assert check.check([path]) == ([], [])
    monotonic.advance(STABLE_SECONDS)
    wall.advance(STABLE_SECONDS)
    assert check.check([path]) == ([path], [])


def test_a_zip_that_changes_between_two_looks_waits_for_the_bridge_to_see_it_quiet(tmp_path):
    check, monotonic, wall = tracker()
    data = a_zip()
    path = dropped(tmp_path, data[:-30], age_seconds=0, wall=wall)  # being written
    check.check([path])
    path.write_bytes(data)  # now whole, with a new time stamp
    stamp = int(wall() * 1e9)
    os.utime(path, ns=(stamp, stamp))
    monotonic.advance(POLL_SECONDS)
    wall.advance(POLL_SECONDS)
    assert check.check([path]) == ([], [])
    monotonic.advance(STABLE_SECONDS)
    wall.advance(STABLE_SECONDS)
    assert check.check([path]) == ([path], [])


def test_a_half_written_zip_with_an_old_time_stamp_is_not_taken(tmp_path):
    check, monotonic, wall = tracker()
    path = dropped(tmp_path, a_zip()[:-30], age_seconds=60, wall=wall)  # central directory's end missing
    assert check.check([path]) == ([], [])
    monotonic.advance(POLL_SECONDS)
    assert check.check([path]) == ([], [])


def test_only_what_the_bridge_saw_counts_towards_failing_a_file_that_is_no_zip(tmp_path):
    check, monotonic, wall = tracker()
    path = dropped(tmp_path, b"not a zip yet", age_seconds=3600, wall=wall)  # a copy keeping an old stamp
    check.check([path])
    monotonic.advance(INVALID_AFTER_SECONDS / 2)
    assert check.check([path]) == ([], [])
    monotonic.advance(INVALID_AFTER_SECONDS / 2)
    assert check.check([path]) == ([], [path])
