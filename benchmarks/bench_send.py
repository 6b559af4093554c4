#!/usr/bin/env python3
"""Send benchmark: a 500-image CT study as a ZIP in Outbox_Auto → Orthanc, beside DCMTK storescu.

One run, same machine, loopback, Orthanc with TCP_NODELAY=1 (a fresh Orthanc per measurement):
  1. DCMTK storescu of the unzipped files → Orthanc
  2. DicomBridge from the ZIP's drop into Outbox_Auto until the ZIP is deleted (everything
     stored), with 1 and with 4 parallel associations
  3. peak memory (VmHWM) of the bridge while sending a ~1 GB ZIP

    python benchmarks/bench_send.py [--images 500] [--big-images 2000]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.bench_receive import make_ct_study, peak_rss_mb, send  # noqa: E402
from bridge.zipper import isal_zlib  # noqa: E402,F401  (zipfile deflates with ISA-L, as the bridge does)
from tests.conftest import write_config  # noqa: E402
from tests.pacs import Orthanc  # noqa: E402


def make_zip(study: Path, target: Path) -> Path:
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED, allowZip64=True) as archive:
        for path in sorted(study.iterdir()):
            archive.write(path, f"series/{path.name}")
    return target


def bench_storescu(study: Path, work: Path) -> float:
    orthanc = Orthanc(work)
    try:
        return send(study, orthanc.port, orthanc.aet)
    finally:
        orthanc.stop()


def bench_bridge(zip_path: Path, work: Path, parallel: int, images: int) -> dict[str, float]:
    orthanc = Orthanc(work / "orthanc")
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
        dropped = store / "Outbox_Auto" / zip_path.name
        os.replace(staged, dropped)
        deadline = started + 1800
        while (dropped.exists() or any((store / ".bridge" / "outbox").glob("*.zip"))) and time.perf_counter() < deadline:
            time.sleep(0.01)
        seconds = time.perf_counter() - started
        failed = list((store / "Outbox_Failed").iterdir())
        stored = len(orthanc.sop_uids())
        peak = peak_rss_mb(proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
        orthanc.stop()
    assert not failed and stored == images, f"send incomplete: {stored}/{images}, failed {failed}"
    return {"seconds": seconds, "peak_rss_mb": peak}


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
        runs: dict[str, list[float]] = {"storescu": [], "bridge1": [], "bridge4": []}
        for run in range(args.repeats):
            runs["storescu"].append(bench_storescu(study, work / f"o{run}"))
            runs["bridge1"].append(bench_bridge(zip_path, work / f"b1-{run}", 1, args.images)["seconds"])
            runs["bridge4"].append(bench_bridge(zip_path, work / f"b4-{run}", 4, args.images)["seconds"])
            print("  run {}: storescu {:.2f} s, bridge ×1 {:.2f} s, bridge ×4 {:.2f} s".format(
                run + 1, runs["storescu"][-1], runs["bridge1"][-1], runs["bridge4"][-1]), flush=True)
        medians = {name: statistics.median(values) for name, values in runs.items()}
        base = medians["storescu"]
        print(f"DCMTK storescu → Orthanc            {base:6.2f} s", flush=True)
        for name, label in (("bridge1", "1 association "), ("bridge4", "4 associations")):
            print(f"DicomBridge ZIP → Orthanc, {label} {medians[name]:6.2f} s  ({medians[name] / base:.2f}x storescu)",
                  flush=True)
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
