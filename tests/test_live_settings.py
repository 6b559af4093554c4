"""Saved settings take effect in the running workers: each reads the settings in force when it decides.

Driven through the aggregator's clock seam, so a quiet time of minutes passes in no time.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from bridge.engine import Engine
from bridge.settings import Settings

from .fakes import FakeClock, received_file


def test_a_changed_quiet_time_applies_to_a_study_already_waiting(bridge_settings: Settings, tmp_path: Path):
    engine = Engine(replace(bridge_settings, receive_timeout_seconds=600))
    try:
        clock = FakeClock()
        engine.aggregator.clock = clock
        engine.aggregator.store("1.2.3", "1.2.3.1", received_file(tmp_path / "in", "a"))
        clock.now += 60
        assert engine.aggregator.claim_due() == []  # 10 minutes of quiet time: not yet
        assert engine.apply_settings(replace(engine.settings, receive_timeout_seconds=30)) == ""
        assert [study.key for study in engine.aggregator.claim_due()] == ["1.2.3"]
    finally:
        engine.stop(grace_seconds=0)


def test_a_changed_recipient_id_tag_is_read_by_the_zipper(bridge_settings: Settings):
    engine = Engine(bridge_settings)
    try:
        assert engine.zipper.crid_tag() == 0x00102201
        engine.apply_settings(replace(engine.settings, receive_crid_tag_group="0008",
                                     receive_crid_tag_element="1030"))
        assert engine.zipper.crid_tag() == 0x00081030
    finally:
        engine.stop(grace_seconds=0)
