#!/usr/bin/env python3
"""Receive benchmark: DicomBridge beside DCMTK storescp and Orthanc, same study, same sender.

The sender is always DCMTK storescu (TCP_NODELAY=1) on loopback. Receivers, each started fresh
for every measurement and run in alternating order (the order rotates every run, so no receiver
always goes first on a warm or a cold machine):

- ``storescp``: DCMTK storescp writing files (no fsync: the reference for speed);
- ``bridge-sync``: DicomBridge with ``receive.sync_before_ack = true`` (the default);
- ``bridge-nosync``: DicomBridge with ``receive.sync_before_ack = false``;
- ``orthanc``: Orthanc with ``SyncStorageArea: true`` (it fsyncs every file before answering);
- with ``--baseline DIR`` (another checkout of the bridge, e.g. ``git archive`` of an older commit
  unpacked), ``baseline-sync`` and ``baseline-nosync``: that code, measured in the same runs, so that
  a change is judged by ratios within one run rather than against figures from a quieter hour.

Per receiver: wall time of one storescu sending the whole study, and of four storescu sending a
quarter each at once; receiver CPU milliseconds per image (user + system time of the receiving
process and its children, read from /proc before and after the send: steadier than wall time on
a shared machine, though it too grows when the machine is busy: so also as a ratio to storescp's
in the same run). Reported as medians of ``--repeats`` runs (at least 5 for figures worth
quoting) and as the median of the per-run ratios to storescp. Then the bridge's peak resident
memory (VmHWM) while receiving a ~1 GB study, and how soon its ZIP follows the timeout.

    python benchmarks/bench_receive.py [--images 500] [--repeats 5] [--big-images 2000] [--json out.json]
                                       [--baseline DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
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
RECEIVERS = ("storescp", "bridge-sync", "bridge-nosync", "orthanc")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


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


def quarters(study: Path) -> list[Path]:
    """The study's files dealt into four folders (hard links: no copies)."""
    files = sorted(study.glob("*.dcm"))
    folders = []
    for number in range(4):
        folder = study.parent / f"{study.name}-q{number}"
        if not folder.exists():
            folder.mkdir()
            for path in files[number::4]:
                os.link(path, folder / path.name)
        folders.append(folder)
    return folders


def storescu_command(folder: Path, port: int, called: str, *options: str) -> list[str]:
    return [dcmtk("storescu"), "-aec", called, *options, "+sd", "+r", "-R", "127.0.0.1", str(port), str(folder)]


def send(folder: Path, port: int, called: str, *options: str) -> float:
    """Seconds for DCMTK storescu to send the folder (association to release); ``options``, e.g. TLS."""
    started = time.perf_counter()
    subprocess.run(storescu_command(folder, port, called, *options), check=True, env=PEER_ENV,
                   capture_output=True, timeout=1800)
    return time.perf_counter() - started


def send_parallel(folders: list[Path], port: int, called: str) -> float:
    """Seconds for one storescu per folder, all at once, until the last has released."""
    started = time.perf_counter()
    senders = [subprocess.Popen(storescu_command(folder, port, called), env=PEER_ENV,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for folder in folders]
    for sender in senders:
        output, _ = sender.communicate(timeout=1800)
        if sender.returncode != 0:
            raise RuntimeError(f"storescu to port {port} ({called}) exited {sender.returncode}: "
                               f"{output.decode(errors='replace')[-2000:]}")
    return time.perf_counter() - started


def wait_port(port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {port}")


def with_peer(command: list[str], port: int, measure: Callable[[], float]) -> float:
    """Start a receiving peer listening on ``port``, run ``measure``, stop the peer (bench_tls uses it)."""
    proc = subprocess.Popen(command, env=PEER_ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port)
        return measure()
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its waited-for children."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(value) for value in fields[11:15]) / CLOCK_TICKS


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


@dataclass
class Receiver:
    """One receiving process started for one measurement."""

    process: subprocess.Popen  # type: ignore[type-arg]
    port: int
    called: str
    folder: Path

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=60)
        shutil.rmtree(self.folder, ignore_errors=True)


def settle_disk() -> None:
    """Write back what earlier measurements left dirty (and, on a ``discard`` mount, trim what they
    deleted) now, so that the kernel does not do it inside the next measurement's window."""
    if hasattr(os, "sync"):
        os.sync()


def start_receiver(kind: str, work: Path, baseline: Path | None = None) -> Receiver:
    settle_disk()  # every measurement starts with the earlier ones written back
    port = free_port()
    folder = work / f"{kind}-{port}"
    folder.mkdir(parents=True)
    if kind == "storescp":
        command, called = [dcmtk("storescp"), "-od", str(folder), "-aet", "STORESCP", str(port)], "STORESCP"
    elif kind == "orthanc":
        binary = shutil.which("Orthanc", path="/usr/sbin:/usr/bin")
        if binary is None:
            raise FileNotFoundError("Orthanc")
        config = folder / "orthanc.json"
        config.write_text(json.dumps({
            "Name": "bench", "DicomPort": port, "HttpPort": free_port(), "DicomAet": "ORTHANC",
            "StorageDirectory": str(folder / "db"), "IndexDirectory": str(folder / "db"),
            "RemoteAccessAllowed": False, "AuthenticationEnabled": False, "DicomCheckCalledAet": False,
            "SyncStorageArea": True, "Plugins": [],
        }))
        command, called = [binary, str(config)], "ORTHANC"
    else:
        config = write_config(folder / "bridge.toml", general__storage_folder=str(folder / "store"),
                              general__min_free_mb=0, receive__port=port, receive__timeout_seconds=TIMEOUT_SECONDS,
                              receive__crid_tag_group="0010", receive__crid_tag_element="2201",
                              receive__sync_before_ack=kind.endswith("-sync"))
        command = [sys.executable, "-m", "bridge.cli", "--headless", "--config", str(config)]
        called = "CRYPE_DCM"
    # python -m imports the bridge package from the working folder first: the baseline's code for its kinds
    code = baseline if kind.startswith("baseline-") and baseline is not None else ROOT
    process = subprocess.Popen(command, env=PEER_ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=code)
    receiver = Receiver(process, port, called, folder)
    try:
        wait_port(port)
    except TimeoutError:
        receiver.stop()
        raise
    return receiver


def measure(kind: str, work: Path, study: Path, images: int, parallel: bool,
            baseline: Path | None = None) -> dict[str, float]:
    receiver = start_receiver(kind, work, baseline)
    try:
        before = cpu_seconds(receiver.process.pid)
        seconds = (send_parallel(quarters(study), receiver.port, receiver.called) if parallel
                   else send(study, receiver.port, receiver.called))
        cpu = cpu_seconds(receiver.process.pid) - before
    finally:
        receiver.stop()
    return {"s": seconds, "cpu_ms_per_image": cpu * 1000 / images}


def bridge_zip_and_memory(study: Path, work: Path) -> dict[str, float]:
    """Receive with the default settings; the ZIP's delay after the timeout and the peak memory."""
    receiver = start_receiver("bridge-sync", work)
    try:
        receive_seconds = send(study, receiver.port, receiver.called)
        last_response = time.perf_counter()
        inbox = receiver.folder / "store" / "Inbox_Auto"
        deadline = last_response + 900
        while not any(inbox.glob("*.zip")) and time.perf_counter() < deadline:
            time.sleep(0.01)
        zip_seconds = time.perf_counter() - last_response - TIMEOUT_SECONDS
        peak = peak_rss_mb(receiver.process.pid)
        zip_mb = sum(p.stat().st_size for p in inbox.glob("*.zip")) / 1e6
    finally:
        receiver.stop()
    return {"receive_s": receive_seconds, "zip_after_timeout_s": zip_seconds, "peak_rss_mb": peak, "zip_mb": zip_mb}


def summarise(runs: dict[str, list[dict[str, float]]], key: str) -> dict[str, dict[str, float]]:
    """Medians per receiver, and the median of per-run ratios to storescp."""
    summary: dict[str, dict[str, float]] = {}
    reference = runs.get("storescp", [])
    for kind, values in runs.items():
        if not values:
            continue
        entry = {"median_s": statistics.median(v["s"] for v in values),
                 "cpu_ms_per_image": statistics.median(v["cpu_ms_per_image"] for v in values)}
        if reference and len(reference) == len(values):
            entry["ratio_to_storescp"] = statistics.median(v["s"] / r["s"] for v, r in zip(values, reference, strict=True))
            # CPU time inflates on a busy machine (shared caches and cores): storescp's in the same run is the yardstick
            entry["cpu_ratio_to_storescp"] = statistics.median(
                v["cpu_ms_per_image"] / r["cpu_ms_per_image"] for v, r in zip(values, reference, strict=True))
        baseline = runs.get(kind.replace("bridge-", "baseline-"), []) if kind.startswith("bridge-") else []
        if baseline and len(baseline) == len(values):  # this code against the baseline's, run by run
            entry["cpu_ratio_to_baseline"] = statistics.median(
                v["cpu_ms_per_image"] / b["cpu_ms_per_image"] for v, b in zip(values, baseline, strict=True))
        summary[kind] = entry
    return {key: summary} if key else summary


def _cpu_ratio(entry: dict[str, float]) -> str:
    ratio, baseline = entry.get("cpu_ratio_to_storescp"), entry.get("cpu_ratio_to_baseline")
    return ("" if ratio is None else f" ({ratio:4.2f}x storescp's)") + (
        "" if baseline is None else f" ({baseline:4.2f}x the baseline's)")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=5, help="alternating runs (medians; 5 or more)")
    parser.add_argument("--big-images", type=int, default=2000, help="images of the ~1 GB memory study (0: skip)")
    parser.add_argument("--receivers", default=",".join(RECEIVERS))
    parser.add_argument("--json", type=Path)
    parser.add_argument("--baseline", type=Path, help="another checkout of the bridge, measured beside this one")
    args = parser.parse_args()
    kinds = [k for k in args.receivers.split(",") if k]
    if args.baseline is not None:
        kinds += [k for k in ("baseline-sync", "baseline-nosync") if k not in kinds]
    if "orthanc" in kinds and shutil.which("Orthanc", path="/usr/sbin:/usr/bin") is None:
        kinds.remove("orthanc")
    with tempfile.TemporaryDirectory(prefix="bench-receive-") as tmp:
        work = Path(tmp)
        study = make_ct_study(work / "study", args.images)
        size_mb = sum(p.stat().st_size for p in study.iterdir()) / 1e6
        print(f"study: {args.images} images, {size_mb:.0f} MB; {args.repeats} alternating runs; medians",
              flush=True)
        single: dict[str, list[dict[str, float]]] = {k: [] for k in kinds}
        four: dict[str, list[dict[str, float]]] = {k: [] for k in kinds}
        for run in range(args.repeats):
            order = kinds[run % len(kinds):] + kinds[:run % len(kinds)]
            line = []
            for kind in order:
                single[kind].append(measure(kind, work / "runs", study, args.images, False, args.baseline))
                four[kind].append(measure(kind, work / "runs", study, args.images, True, args.baseline))
                line.append(f"{kind} {single[kind][-1]['s']:.2f}/{four[kind][-1]['s']:.2f} s")
            print(f"  run {run + 1} (1 / 4 associations): " + ", ".join(line), flush=True)
        results: dict[str, object] = {"images": args.images, "study_mb": size_mb, "repeats": args.repeats,
                                      **summarise(single, "one_association"),
                                      **summarise(four, "four_associations"), "runs": {"one": single, "four": four}}
        for title, key in (("one association", "one_association"), ("four associations at once", "four_associations")):
            print(f"{title}:", flush=True)
            for kind, entry in results[key].items():  # type: ignore[attr-defined]
                ratio = entry.get("ratio_to_storescp")
                print(f"  {kind:14s} {entry['median_s']:6.2f} s  "
                      f"{'' if ratio is None else f'{ratio:4.2f}x storescp  '}"
                      f"CPU {entry['cpu_ms_per_image']:5.2f} ms/image{_cpu_ratio(entry)}", flush=True)
        if "bridge-sync" in kinds:
            zip_result = bridge_zip_and_memory(study, work / "runs")
            results["zip"] = zip_result
            print(f"ZIP in the inbox {zip_result['zip_after_timeout_s']:.2f} s after the timeout "
                  f"({zip_result['zip_mb']:.0f} MB ZIP)", flush=True)
        if args.big_images:
            shutil.rmtree(study, ignore_errors=True)
            big = make_ct_study(work / "big", args.big_images)
            big_mb = sum(p.stat().st_size for p in big.iterdir()) / 1e6
            big_result = bridge_zip_and_memory(big, work / "runs")
            results["big"] = {"study_mb": big_mb, **big_result}
            print(f"{big_mb:.0f} MB study: peak RSS of the bridge {big_result['peak_rss_mb']:.0f} MB, "
                  f"receive {big_result['receive_s']:.1f} s, ZIP {big_result['zip_after_timeout_s']:.1f} s "
                  f"after the timeout", flush=True)
        if args.json:
            args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
