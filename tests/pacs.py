"""Third-party PACS peers for sending tests: Orthanc and DCMTK storescp, on loopback ports."""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

from .peers import PEER_ENV, dcmtk, system_tool


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait(predicate, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)  # polling a peer we started; it has no event to await
    raise TimeoutError(f"{what} did not come up within {timeout} s")


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


class Orthanc:
    """An Orthanc of our own: its own ports, folders and config, stopped at the end."""

    aet = "ORTHANC"

    def __init__(self, folder: Path, **extra_config: object) -> None:
        self.port, self.http_port = _free_port(), _free_port()
        folder.mkdir(parents=True, exist_ok=True)
        config = folder / "orthanc.json"
        config.write_text(json.dumps({
            "Name": "test", "DicomAet": self.aet, "DicomPort": self.port, "HttpPort": self.http_port,
            "StorageDirectory": str(folder / "db"), "IndexDirectory": str(folder / "db"),
            "RemoteAccessAllowed": False, "AuthenticationEnabled": False, "DicomCheckCalledAet": True,
            "Plugins": [], **extra_config,
        }))
        self.process = subprocess.Popen([system_tool("Orthanc", "orthanc"), str(config)], env=PEER_ENV,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait(lambda: self._get_ok("/system") and _listening(self.port), "Orthanc")

    def _get_ok(self, path: str) -> bool:
        try:
            self.get(path)
            return True
        except OSError:
            return False

    def get(self, path: str):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}{path}", timeout=30) as response:
            body = response.read()
            return json.loads(body) if response.headers.get_content_type() == "application/json" else body

    def sop_uids(self) -> dict[str, str]:
        """SOP Instance UID -> Orthanc instance id, for everything stored."""
        return {item["MainDicomTags"]["SOPInstanceUID"]: item["ID"] for item in self.get("/instances?expand")}

    def file(self, instance_id: str) -> bytes:
        return self.get(f"/instances/{instance_id}/file")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=60)


class StoreSCP:
    """DCMTK storescp accepting every transfer syntax it knows, writing files to a folder."""

    aet = "STORESCP"

    def __init__(self, folder: Path, port: int | None = None, extra_args: tuple[str, ...] = ()) -> None:
        self.port = port or _free_port()
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen([dcmtk("storescp"), "+xa", "-aet", self.aet, *extra_args, "-od", str(folder),
                                         str(self.port)], env=PEER_ENV, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        _wait(lambda: _listening(self.port), "storescp")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)
