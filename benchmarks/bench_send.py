#!/usr/bin/env python3
"""Send benchmark: a 500-image CT study as a ZIP in Outbox_Auto → Orthanc / storescp, beside DCMTK storescu.

Alternating runs, same machine, loopback, peers with TCP_NODELAY=1 (a fresh peer per measurement):
  1. DCMTK storescu of the unzipped files → Orthanc, and → DCMTK storescp
  2. DicomBridge from the ZIP's drop into Outbox_Auto until the ZIP is deleted (everything
     stored): into Orthanc with 1 and 4 parallel associations, into storescp with 1; and the
     bridge process's CPU time per image (the machine is shared: CPU ms tell more than seconds)
  2b. the bridge's sender alone (``send_files`` in this process) with the unzipped files, as
     storescu gets them, → storescp: what the unpacking adds, told apart from the sending
  3. peak memory (VmHWM) of the bridge while sending a ~1 GB ZIP

    python benchmarks/bench_send.py [--images 500] [--big-images 2000]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.bench_receive import make_ct_study, peak_rss_mb, send, settle_disk  # noqa: E402
from bridge.runtime import configure_process  # noqa: E402
from tests.conftest import write_config  # noqa: E402
from tests.pacs import Orthanc, StoreSCP  # noqa: E402

PeerT = TypeVar("PeerT", Orthanc, StoreSCP)


def make_zip(study: Path, target: Path) -> Path:
    configure_process()  # zipfile deflates with ISA-L, as the bridge does
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED, allowZip64=True) as archive:
        for path in sorted(study.iterdir()):
            archive.write(path, f"series/{path.name}")
    return target


@contextmanager
def running(peer: PeerT) -> Iterator[PeerT]:
    """A fresh peer (Orthanc, storescp) for one measurement, stopped afterwards whatever happens."""
    settle_disk()
    try:
        yield peer
    finally:
        peer.stop()


def bench_storescu(study: Path, work: Path) -> float:
    with running(Orthanc(work)) as orthanc:
        return send(study, orthanc.port, orthanc.aet)


def bench_storescu_to_storescp(study: Path, work: Path) -> float:
    with running(StoreSCP(work / "scp")) as scp:
        return send(study, scp.port, scp.aet)


def bench_sender_alone(study: Path, work: Path) -> float:
    """The bridge's sending alone, from files already unzipped as storescu gets them (in this process)."""
    from bridge.sender import PacsTarget, SendReport, read_meta, send_files

    with running(StoreSCP(work / "scp")) as scp:
        metas = [read_meta(path) for path in sorted(study.iterdir())]
        started = time.perf_counter()
        report = send_files(PacsTarget("127.0.0.1", scp.port, scp.aet, "BENCH"), metas, SendReport())
        seconds = time.perf_counter() - started
    assert report.ok and len(report.delivered) == len(metas), "send incomplete"
    return seconds


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (/proc/PID/stat fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bench_bridge(zip_path: Path, work: Path, parallel: int, images: int, peer: str = "orthanc") -> dict[str, float]:
    settle_disk()
    orthanc = Orthanc(work / "orthanc") if peer == "orthanc" else StoreSCP(work / "scp")
    store = work / "store"
    config = write_config(work / "bridge.toml", general__storage_folder=str(store), general__min_free_mb=0,
                          receive__enabled=False, send__enabled=True, send__host="127.0.0.1",
                          send__port=orthanc.port, send__ae_title_receiver=orthanc.aet,
                          send__parallel_associations=parallel)
    proc = subprocess.Popen([sys.executable, "-m", "bridge.cli", "--headless", "--config", str(config)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        for line in proc.stderr:  # type: ignore[union-attr]
            if "running headless" in line:
                break
        staged = store / zip_path.name
        os.link(zip_path, staged)  # same file system as the outbox: the drop is a rename
        started = time.perf_counter()
        cpu_before = cpu_seconds(proc.pid)
        dropped = store / "Outbox_Auto" / zip_path.name
        os.replace(staged, dropped)
        deadline = started + 1800
        while (dropped.exists() or any((store / ".bridge" / "outbox").rglob("*.zip"))) and time.perf_counter() < deadline:
            time.sleep(0.01)
        seconds = time.perf_counter() - started
        cpu_ms = (cpu_seconds(proc.pid) - cpu_before) * 1000 / images
        failed = list((store / "Outbox_Failed").iterdir())
        stored = len(orthanc.sop_uids()) if isinstance(orthanc, Orthanc) else len(list(orthanc.folder.iterdir()))
        peak = peak_rss_mb(proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
        orthanc.stop()
    assert not failed and stored == images, f"send incomplete: {stored}/{images}, failed {failed}"
    return {"seconds": seconds, "peak_rss_mb": peak, "cpu_ms_per_image": cpu_ms}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--big-images", type=int, default=2000)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-send-") as tmp:
        work = Path(tmp)
        study = make_ct_study(work / "study", args.images)
        zip_path = make_zip(study, work / "study.zip")
        print(f"study: {args.images} images, {sum(p.stat().st_size for p in study.iterdir()) / 1e6:.0f} MB, "
              f"ZIP {zip_path.stat().st_size / 1e6:.0f} MB; {args.repeats} runs, medians", flush=True)
        runs: dict[str, list[float]] = {name: [] for name in (
            "storescu", "bridge1", "bridge4", "storescu_scp", "bridge_scp", "sender_alone_scp", "cpu_ms_orthanc4",
            "cpu_ms_scp")}
        for run in range(args.repeats):
            runs["storescu"].append(bench_storescu(study, work / f"o{run}"))
            runs["bridge1"].append(bench_bridge(zip_path, work / f"b1-{run}", 1, args.images)["seconds"])
            four = bench_bridge(zip_path, work / f"b4-{run}", 4, args.images)
            runs["bridge4"].append(four["seconds"])
            runs["cpu_ms_orthanc4"].append(four["cpu_ms_per_image"])
            runs["storescu_scp"].append(bench_storescu_to_storescp(study, work / f"s{run}"))
            one = bench_bridge(zip_path, work / f"bs-{run}", 1, args.images, peer="storescp")
            runs["bridge_scp"].append(one["seconds"])
            runs["cpu_ms_scp"].append(one["cpu_ms_per_image"])
            runs["sender_alone_scp"].append(bench_sender_alone(study, work / f"f{run}"))
            print("  run {}: Orthanc: storescu {:.2f} s, bridge ×1 {:.2f} s, ×4 {:.2f} s; storescp: storescu {:.2f} s, "
                  "bridge ×1 {:.2f} s, its sender alone (unzipped files) {:.2f} s".format(
                      run + 1, runs["storescu"][-1], runs["bridge1"][-1], runs["bridge4"][-1], runs["storescu_scp"][-1],
                      runs["bridge_scp"][-1], runs["sender_alone_scp"][-1]), flush=True)
            for folder in work.glob(f"*{run}"):  # what this run's peers stored: 1.3 GB, not kept to the end
                shutil.rmtree(folder, ignore_errors=True)
        medians = {name: statistics.median(values) for name, values in runs.items()}

        def ratios(name: str, base_name: str) -> str:
            """Ratio of the medians, and the median of the per-run ratios (each run's peers in the same minute)."""
            paired = statistics.median(a / b for a, b in zip(runs[name], runs[base_name], strict=True))
            return f"{medians[name] / medians[base_name]:.2f}x storescu; per run {paired:.2f}x"

        base = medians["storescu"]
        print(f"DCMTK storescu → Orthanc            {base:6.2f} s", flush=True)
        for name, label in (("bridge1", "1 association "), ("bridge4", "4 associations")):
            print(f"DicomBridge ZIP → Orthanc, {label} {medians[name]:6.2f} s  ({ratios(name, 'storescu')})",
                  flush=True)
        scp_base = medians["storescu_scp"]
        print(f"DCMTK storescu → storescp           {scp_base:6.2f} s", flush=True)
        print(f"DicomBridge ZIP → storescp, 1 assoc. {medians['bridge_scp']:6.2f} s  "
              f"({ratios('bridge_scp', 'storescu_scp')})", flush=True)
        print(f"its sender alone, unzipped files   {medians['sender_alone_scp']:6.2f} s  "
              f"({ratios('sender_alone_scp', 'storescu_scp')})", flush=True)
        print(f"bridge CPU per image: {medians['cpu_ms_orthanc4']:.2f} ms (Orthanc ×4), "
              f"{medians['cpu_ms_scp']:.2f} ms (storescp ×1)", flush=True)
        results: dict[str, object] = {"images": args.images, "medians": medians, "runs": runs}
        if args.big_images:
            big = make_ct_study(work / "big", args.big_images)
            big_zip = make_zip(big, work / "big.zip")
            big_result = bench_bridge(big_zip, work / "big-run", 4, args.big_images)
            results["big"] = {"zip_mb": big_zip.stat().st_size / 1e6, **big_result}
            print(f"{big_zip.stat().st_size / 1e6:.0f} MB ZIP ({args.big_images} images): peak RSS of the bridge "
                  f"{big_result['peak_rss_mb']:.0f} MB, sent in {big_result['seconds']:.1f} s", flush=True)
        if args.json:
            args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
