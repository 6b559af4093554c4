"""Real third-party DICOM peers for the tests: DCMTK tools, Orthanc, dicom3tools.

pyenv/pip put pynetdicom's own ``storescu``/``storescp`` scripts on PATH under the same names
as DCMTK's, so tools are looked up in the system folders and checked to really be DCMTK.
When a peer is missing the test is skipped on a developer machine but fails under CI
(``CI=true``), so a CI run can never pass without the peers.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from functools import cache

import pytest

SYSTEM_BIN = os.pathsep.join(["/usr/bin", "/usr/local/bin", "/usr/sbin", "/bin"])
PEER_ENV = {**os.environ, "TCP_NODELAY": "1"}  # Debian's DCMTK leaves Nagle on: ~45 ms per C-STORE


def _missing(what: str) -> None:
    message = f"{what} is not installed (apt-get install -y dcmtk orthanc dicom3tools)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@cache
def _find_dcmtk(name: str) -> str | None:
    path = shutil.which(name, path=SYSTEM_BIN)
    if path is None:
        return None
    out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=20)
    return path if "dcmtk" in (out.stdout + out.stderr).lower() else None


def dcmtk(name: str) -> str:
    """Absolute path of a DCMTK tool (storescu, storescp, echoscu, …) or skip/fail."""
    path = _find_dcmtk(name)
    if path is None:
        _missing(f"DCMTK {name}")
    return path  # type: ignore[return-value]


def system_tool(name: str, package: str) -> str:
    """Absolute path of an installed program (openssl, tmux, …) or skip/fail."""
    path = shutil.which(name, path=SYSTEM_BIN)
    if path is None:
        _missing(f"{name} ({package})")
    return path  # type: ignore[return-value]


def dciodvfy_errors(path: str) -> set[str]:
    """The 'Error' lines dicom3tools' dciodvfy reports for a file (compare before/after)."""
    result = subprocess.run([dicom_tool("dciodvfy", "dicom3tools"), path], capture_output=True, text=True,
                            timeout=60, check=False)
    return {line.strip() for line in (result.stdout + result.stderr).splitlines() if line.startswith("Error")}
def dicom_tool(name: str, package: str) -> str:
    """A third-party DICOM peer that is not DCMTK (Orthanc, dicom3tools' dciodvfy).

    Tests reaching this or ``dcmtk`` are marked ``peers`` (see conftest), so ``-m "not peers"``
    runs the fast layer.
    """
    return system_tool(name, package)


PEER_ENTRY_POINTS = (dcmtk, dicom_tool)


def storescu_args(ae_called: str, port: int, files: list[str], *extra: str) -> list[str]:
    """A DCMTK storescu command proposing exactly the files' own transfer syntaxes where possible."""
    return [dcmtk("storescu"), "-aec", ae_called, "-aet", "TESTSCU", *extra, "127.0.0.1", str(port), *files]


# DCMTK storescu proposes uncompressed syntaxes unless told otherwise: one option per family.
STORESCU_OPTION_FOR_TS = {
    "1.2.840.10008.1.2.5": "-xr",      # RLE Lossless
    "1.2.840.10008.1.2.4.90": "-xv",   # JPEG 2000 lossless
    "1.2.840.10008.1.2.4.91": "-xw",   # JPEG 2000
    "1.2.840.10008.1.2.4.50": "-xy",   # JPEG baseline
    "1.2.840.10008.1.2.4.51": "-xx",   # JPEG extended
    "1.2.840.10008.1.2.4.70": "-xs",   # JPEG lossless SV1
    "1.2.840.10008.1.2.4.80": "-xt",   # JPEG-LS lossless
    "1.2.840.10008.1.2.4.81": "-xu",   # JPEG-LS near-lossless
    "1.2.840.10008.1.2.1.99": "-xd",   # Deflated explicit VR little endian
    "1.2.840.10008.1.2.2": "-xb",      # Explicit VR big endian
}


def run_storescu(port: int, files: list[str], ae_called: str = "CRYPE_DCM", transfer_syntax: str = "",
                 timeout: float = 120, check: bool = True, verbose: bool = False) -> subprocess.CompletedProcess[str]:
    extra = ["-R", "-v"] if verbose else ["-R"]
    option = STORESCU_OPTION_FOR_TS.get(transfer_syntax)
    if option:
        extra.append(option)
    result = subprocess.run(storescu_args(ae_called, port, files, *extra), capture_output=True, text=True,
                            timeout=timeout, env=PEER_ENV)
    if check and result.returncode != 0:
        raise AssertionError(f"storescu failed ({result.returncode}): {result.stderr}")
    return result


def send_watching_acks(port: int, files: list[str], after: int,
                       action: Callable[[subprocess.Popen], None]) -> list[str]:
    """Send with storescu -v; once ``after`` images are acknowledged call ``action`` (with the
    sender's process, e.g. to kill the bridge or the sender itself). Returns the acknowledged
    files, read from storescu's own report, so a test knows exactly what was promised."""
    sender = subprocess.Popen(storescu_args("CRYPE_DCM", port, files, "-R", "-v"), env=PEER_ENV,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    acknowledged: list[str] = []
    current = None
    for line in sender.stdout:  # type: ignore[union-attr]
        if "Sending file:" in line:
            current = line.split("Sending file:", 1)[1].strip()
        elif "Received Store Response (Success)" in line and current:
            acknowledged.append(current)
            if len(acknowledged) == after:
                action(sender)
    sender.wait(timeout=120)
    return acknowledged
