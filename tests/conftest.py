"""Shared fixtures: a config file, a free loopback port, and an in-process bridge."""

from __future__ import annotations

import queue
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import pytest
import tomlkit

from bridge.engine import Engine
from bridge.events import BridgeEvent, StudyRouted
from bridge.settings import Settings, default_document, load_settings


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_config(path: Path, **overrides: Any) -> Path:
    """A config file with defaults plus ``overrides`` given as ``section__key=value``."""
    document = default_document()
    for name, value in overrides.items():
        section, key = name.split("__", 1)
        document[section][key] = value
    path.write_text(tomlkit.dumps(document), encoding="utf-8")
    return path


@dataclass
class RunningBridge:
    """An Engine on a loopback port, with its events collected for awaiting."""

    engine: Engine
    port: int
    events: "queue.Queue[BridgeEvent]" = field(default_factory=queue.Queue)

    @property
    def storage(self) -> Path:
        return self.engine.layout.root

    def wait_routed(self, count: int = 1, timeout: float = 60) -> list[StudyRouted]:
        """Block until ``count`` studies left the spool (ZIP or failed folder)."""
        routed: list[StudyRouted] = []
        while len(routed) < count:
            event = self.events.get(timeout=timeout)  # raises queue.Empty after timeout
            if isinstance(event, StudyRouted):
                routed.append(event)
        return routed

    def zips(self, inbox: str) -> list[Path]:
        return sorted((self.storage / inbox).glob("*.zip"))


@pytest.fixture
def bridge_settings(tmp_path: Path) -> Settings:
    config = write_config(tmp_path / "config.toml", general__storage_folder=str(tmp_path / "store"),
                          general__min_free_mb=0, receive__port=free_port(), receive__timeout_seconds=1,
                          receive__crid_tag_group="0010", receive__crid_tag_element="2201")
    return load_settings(config)


@pytest.fixture
def running_bridge(bridge_settings: Settings) -> Iterator[RunningBridge]:
    engine = Engine(bridge_settings, bind_address="127.0.0.1")
    running = RunningBridge(engine=engine, port=bridge_settings.receive_port)
    engine.bus.subscribe(running.events.put)
    engine.start()
    try:
        yield running
    finally:
        engine.stop(grace_seconds=5)
