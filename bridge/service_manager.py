"""``dicombridge service install|uninstall|status``: one interface, one implementation per platform.

systemd on Linux (:mod:`bridge.service_unit`), WinSW on Windows (:mod:`bridge.windows_service`).
Both run the same headless command line, so the bridge behaves the same under either.
"""

from __future__ import annotations

import sys
from pathlib import Path, PurePath
from typing import Protocol


class ServiceError(RuntimeError):
    """The service cannot be installed or queried here; the message says why."""


class ServiceManager(Protocol):
    def install(self, config_path: Path, user: str | None) -> str:
        """Check, write the service definition, register and start it; returns what was done."""

    def uninstall(self) -> str:
        """Stop and unregister the service, remove its definition; returns what was done."""

    def status(self) -> tuple[int, str]:
        """Exit code (0: installed/running) and the service manager's own words."""


def headless_arguments(config: PurePath) -> list[str]:
    """What follows the venv's Python in every service definition."""
    return ["-m", "bridge.cli", "--headless", "--config", str(config)]


def service_manager(folder: Path | None = None, wrapper: Path | None = None,
                    platform: str = sys.platform) -> ServiceManager:
    """The manager for this platform; ``folder`` overrides where the definition is written."""
    if platform == "win32":
        from .windows_service import WinswService

        return WinswService(folder=folder, wrapper=wrapper)
    from .service_unit import SystemdService

    return SystemdService(unit_dir=folder)
