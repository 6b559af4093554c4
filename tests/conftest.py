"""Shared fixtures: a config file, a free loopback port, and an in-process bridge."""

from __future__ import annotations

import queue
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, cast

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

    def wait_for(self, matches: Callable[[BridgeEvent], bool], timeout: float = 60) -> BridgeEvent:
        """Block until an event that ``matches`` comes (earlier ones are dropped)."""
        while True:
            event = self.events.get(timeout=timeout)  # raises queue.Empty after timeout
            if matches(event):
                return event

    def wait_routed(self, count: int = 1, timeout: float = 60) -> list[StudyRouted]:
        """Block until ``count`` studies left the spool (ZIP or failed folder)."""
        return [cast(StudyRouted, self.wait_for(lambda e: isinstance(e, StudyRouted), timeout)) for _ in range(count)]

    def zips(self, inbox: str) -> list[Path]:
        return sorted((self.storage / inbox).glob("*.zip"))


@pytest.fixture
def bridge_settings(tmp_path: Path) -> Settings:
    config = write_config(tmp_path / "config.toml", general__storage_folder=str(tmp_path / "store"),
                          general__min_free_mb=0, receive__port=free_port(), receive__timeout_seconds=1,
                          receive__crid_tag_group="0010", receive__crid_tag_element="2201")
    return load_settings(config)


def start_running_bridge(settings: Settings) -> RunningBridge:
    """An Engine on loopback with every event collected from before its start."""
    engine = Engine(settings, bind_address="127.0.0.1")
    running = RunningBridge(engine=engine, port=settings.receive_port)
    engine.bus.subscribe(running.events.put)
    engine.start()
    return running


@pytest.fixture
def running_bridge(bridge_settings: Settings) -> Iterator[RunningBridge]:
    running = start_running_bridge(bridge_settings)
    try:
        yield running
    finally:
        running.engine.stop(grace_seconds=5)


@pytest.fixture
def make_bridge() -> Iterator[Callable[[Settings], Any]]:
    """Start sending bridges (tests/test_send.py's SendingBridge), all stopped at the end."""
    from .test_send import SendingBridge

    bridges: list[SendingBridge] = []

    def start(settings: Settings) -> SendingBridge:
        bridge = SendingBridge(settings)
        bridges.append(bridge)
        return bridge

    yield start
    for bridge in bridges:
        bridge.stop()
