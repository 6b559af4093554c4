"""Shared fixtures: a config file, a free loopback port, and an in-process bridge."""

from __future__ import annotations

import inspect
import queue
import socket
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest
import tomlkit

from bridge.engine import Engine
from bridge.events import BridgeEvent, StudyRouted
from bridge.runtime import configure_process
from bridge.settings import Settings, default_document, load_settings

from . import pacs, peers

# where names imported inside a function (``from .peers import dcmtk``) are looked up
_HELPER_NAMESPACES = ({**vars(pacs), **vars(peers)},)


def _globals_named(obj: object) -> Iterator[object]:
    """What a test helper's code names at module level (nested functions and lambdas included,
    names imported inside it from the peer helpers too); for a class, what its methods name."""
    if inspect.isclass(obj):
        for member in vars(obj).values():
            yield from _globals_named(getattr(member, "__func__", member))
        return
    if not inspect.isfunction(obj):
        return
    namespace = obj.__globals__
    codes = [obj.__code__]
    while codes:
        code = codes.pop()
        for name in code.co_names:
            found = [space[name] for space in (namespace, *_HELPER_NAMESPACES) if name in space]
            yield from found[:1]
        codes.extend(const for const in code.co_consts if isinstance(const, types.CodeType))


def reaches_peers(roots: list[object]) -> bool:
    """Whether these test functions/fixtures call a real DICOM peer, through any of the tests'
    own helpers (tests.*) on the way."""
    seen: set[int] = set()
    stack = list(roots)
    while stack:
        obj = stack.pop()
        if inspect.isfunction(obj) or type(obj).__name__ == "FixtureFunctionDefinition":
            obj = inspect.unwrap(obj)  # decorated functions, pytest's fixture definitions
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if any(obj is entry for entry in peers.PEER_ENTRY_POINTS):
            return True
        if (inspect.isfunction(obj) or inspect.isclass(obj)) and obj.__module__.startswith("tests"):
            stack.extend(_globals_named(obj))
    return False


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark ``peers`` every test that talks to DCMTK, Orthanc or dicom3tools, directly, through a
    helper or through a fixture, so that ``-m "not peers"`` is the fast layer."""
    for item in items:
        if not isinstance(item, pytest.Function):
            continue
        roots: list[object] = [item.function]
        for name in item.fixturenames:
            roots.extend(d.func for d in item._fixtureinfo.name2fixturedefs.get(name, ()))
        if reaches_peers(roots):
            item.add_marker(pytest.mark.peers)


@pytest.fixture(autouse=True, scope="session")
def _process_set_up_like_the_bridge() -> None:
    """Tests drive the receiver, sender, fast path and zipper directly, without an engine: set the
    process-wide switches as the engine and the command line do (``bridge.runtime``)."""
    configure_process()


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
    events: queue.Queue[BridgeEvent] = field(default_factory=queue.Queue)

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
