#!/usr/bin/env python3
"""Receive benchmark: DicomBridge side by side with DCMTK storescp (and Orthanc if installed).

One run, same machine, same study, same sender (DCMTK storescu with TCP_NODELAY=1), loopback:
  1. receive time of a 500-image 512×512 16-bit CT study (~254 MB): bridge vs storescp (vs Orthanc)
  2. time from the last C-STORE response to the ZIP in the inbox, minus the timeout
  3. peak memory (VmHWM) of the bridge while receiving a 1 GB study

    python benchmarks/bench_receive.py [--images 500] [--big-images 2000] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.conftest import write_config  # noqa: E402
from tests.peers import PEER_ENV, dcmtk  # noqa: E402

TIMEOUT_SECONDS = 2


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_ct_study(folder: Path, count: int) -> Path:
    """``count`` 512×512 16-bit CT images of one study: a disc of tissue plus 6 bits of noise,
    so deflate has real work (pure noise would not compress, zeros would be unrealistically fast)."""
    folder.mkdir(parents=True, exist_ok=True)
    base = dcmread(get_testdata_file("CT_small.dcm"))
    rng = np.random.default_rng(7)
    y, x = np.mgrid[0:512, 0:512]
    body = ((np.hypot(x - 256, y - 256) < 220) * 1000).astype(np.int32)
    study_uid, series_uid = generate_uid(), generate_uid()
    for number in range(1, count + 1):
        pixels = (body + rng.integers(0, 64, size=(512, 512))).astype(np.uint16)
        base.Rows, base.Columns = 512, 512
        base.BitsAllocated, base.BitsStored, base.HighBit, base.PixelRepresentation = 16, 16, 15, 0
        base.PixelData = pixels.tobytes()
        base.StudyInstanceUID, base.SeriesInstanceUID = study_uid, series_uid
        base.SOPInstanceUID = generate_uid()
        base.file_meta.MediaStorageSOPInstanceUID = base.SOPInstanceUID
        base.InstanceNumber = number
        base.PatientSpeciesDescription = "CRID#1234567890123456"
        base.save_as(folder / f"ct{number:05d}.dcm", enforce_file_format=True)
    return folder


def send(folder: Path, port: int, called: str, *options: str) -> float:
    """Seconds for DCMTK storescu to send the folder (association to release); ``options``, e.g. TLS."""
    started = time.perf_counter()
    subprocess.run([dcmtk("storescu"), "-aec", called, *options, "+sd", "+r", "-R", "127.0.0.1", str(port),
                    str(folder)], check=True, env=PEER_ENV, capture_output=True, timeout=1800)
    return time.perf_counter() - started


def wait_port(port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {port}")


def bench_storescp(study: Path, work: Path) -> float:
    port, out = free_port(), work / "storescp-out"
    out.mkdir(parents=True)
    return send_to_peer([dcmtk("storescp"), "-od", str(out), "-aet", "STORESCP", str(port)], study, port, "STORESCP")


def with_peer(command: list[str], port: int, measure: Callable[[], float]) -> float:
    """Start a receiving peer listening on ``port``, run ``measure``, stop the peer."""
    proc = subprocess.Popen(command, env=PEER_ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port)
        return measure()
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def send_to_peer(command: list[str], study: Path, port: int, called: str) -> float:
    """Start a receiving peer, time the study sent to it, stop the peer."""
    return with_peer(command, port, lambda: send(study, port, called))


def bench_orthanc(study: Path, work: Path) -> float | None:
    binary = shutil.which("Orthanc", path="/usr/sbin:/usr/bin")
    if binary is None:
        return None
    port, http = free_port(), free_port()
    config = work / "orthanc.json"
    config.write_text(json.dumps({
        "Name": "bench", "DicomPort": port, "HttpPort": http, "DicomAet": "ORTHANC",
        "StorageDirectory": str(work / "orthanc-db"), "IndexDirectory": str(work / "orthanc-db"),
        "RemoteAccessAllowed": False, "AuthenticationEnabled": False, "DicomCheckCalledAet": False,
        "Plugins": [],
    }))
    return send_to_peer([binary, str(config)], study, port, "ORTHANC")


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def bench_bridge(study: Path, work: Path, label: str) -> dict[str, float]:
    port = free_port()
    store = work / f"bridge-{label}"
    config = write_config(work / f"bridge-{label}.toml", general__storage_folder=str(store),
                          general__min_free_mb=0, receive__port=port, receive__timeout_seconds=TIMEOUT_SECONDS,
                          receive__crid_tag_group="0010", receive__crid_tag_element="2201")
    proc = subprocess.Popen([sys.executable, "-m", "bridge.cli", "--headless", "--config", str(config)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    try:
        wait_port(port)
        receive_seconds = send(study, port, "CRYPE_DCM")
        last_response = time.perf_counter()
        inbox = store / "Inbox_Auto"
        deadline = last_response + 600
        while not any(inbox.glob("*.zip")) and time.perf_counter() < deadline:
            time.sleep(0.01)
        zip_seconds = time.perf_counter() - last_response - TIMEOUT_SECONDS
        peak = peak_rss_mb(proc.pid)
        zip_bytes = sum(p.stat().st_size for p in inbox.glob("*.zip"))
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    return {"receive_s": receive_seconds, "zip_after_timeout_s": zip_seconds, "peak_rss_mb": peak,
            "zip_mb": zip_bytes / 1e6}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=3, help="alternating runs of storescp and the bridge")
    parser.add_argument("--big-images", type=int, default=2000, help="images of the ~1 GB memory study (0: skip)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-receive-") as tmp:
        work = Path(tmp)
        study = make_ct_study(work / "study", args.images)
        size_mb = sum(p.stat().st_size for p in study.iterdir()) / 1e6
        print(f"study: {args.images} images, {size_mb:.0f} MB; {args.repeats} alternating runs, medians", flush=True)
        storescp_runs, bridge_runs = [], []
        for run in range(args.repeats):
            storescp_runs.append(bench_storescp(study, work / f"scp{run}"))
            bridge_runs.append(bench_bridge(study, work, f"run{run}"))
            shutil.rmtree(work / f"bridge-run{run}", ignore_errors=True)
            shutil.rmtree(work / f"scp{run}", ignore_errors=True)
            print(f"  run {run + 1}: storescp {storescp_runs[-1]:.2f} s, bridge {bridge_runs[-1]['receive_s']:.2f} s, "
                  f"ZIP {bridge_runs[-1]['zip_after_timeout_s']:.2f} s after the timeout", flush=True)
        storescp_s = statistics.median(storescp_runs)
        bridge_s = statistics.median(r["receive_s"] for r in bridge_runs)
        zip_s = statistics.median(r["zip_after_timeout_s"] for r in bridge_runs)
        orthanc_s = bench_orthanc(study, work)
        results: dict[str, object] = {
            "images": args.images, "study_mb": size_mb, "storescp_s": storescp_s, "bridge_s": bridge_s,
            "ratio_bridge_to_storescp": bridge_s / storescp_s, "zip_after_timeout_s": zip_s,
            "orthanc_s": orthanc_s, "zip_mb": bridge_runs[0]["zip_mb"],
        }
        print(f"DCMTK storescp   {storescp_s:6.2f} s", flush=True)
        if orthanc_s is not None:
            print(f"Orthanc          {orthanc_s:6.2f} s  ({orthanc_s / storescp_s:.2f}x storescp)", flush=True)
        print(f"DicomBridge      {bridge_s:6.2f} s  ({bridge_s / storescp_s:.2f}x storescp)", flush=True)
        print(f"ZIP in the inbox {zip_s:6.2f} s after the timeout ({results['zip_mb']:.0f} MB ZIP)", flush=True)
        if args.big_images:
            shutil.rmtree(study, ignore_errors=True)
            big = make_ct_study(work / "big", args.big_images)
            big_mb = sum(p.stat().st_size for p in big.iterdir()) / 1e6
            big_result = bench_bridge(big, work, "big")
            results["big"] = {"study_mb": big_mb, **big_result}
            print(f"{big_mb:.0f} MB study: peak RSS of the bridge {big_result['peak_rss_mb']:.0f} MB, "
                  f"receive {big_result['receive_s']:.1f} s, ZIP {big_result['zip_after_timeout_s']:.1f} s "
                  f"after the timeout", flush=True)
        if args.json:
            args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
