#!/usr/bin/env python3
"""What the completeness check costs per received image (the receiver runs it before every answer).

    python benchmarks/bench_dataset_check.py [--images 200]

Uses bench_receive's 512×512 16-bit CT study; prints microseconds per image for ``check_file``
(file meta + dataset walk, values passed with a seek) and, to compare, for the header scan the
receiver already does.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.bench_receive import make_ct_study  # noqa: E402
from bridge.dataset_check import check_file  # noqa: E402
from bridge.instance import read_study_uid  # noqa: E402


def per_image_microseconds(files: list[Path], job, rounds: int = 5) -> float:
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        for path in files:
            job(path)
        best = min(best, (time.perf_counter() - started) / len(files))
    return best * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        files = sorted(make_ct_study(Path(work) / "ct", args.images).glob("*.dcm"))
        check = per_image_microseconds(files, check_file)
        scan = per_image_microseconds(files, read_study_uid)
    print(f"check_file: {check:.0f} µs per 512×512 CT image ({args.images} images, best of 5)")
    print(f"read_study_uid (header scan, for comparison): {scan:.0f} µs per image")


if __name__ == "__main__":
    main()
