#!/usr/bin/env python3
"""DICOM over TLS benchmark: what TLS costs the bridge, side by side with DCMTK, in one run.

Same CT study as bench_receive (512×512 16-bit), loopback, certificates from tests/pki.py:
  receive: DCMTK storescu +tls → DCMTK storescp +tls  vs  → DicomBridge (receive.tls_*)
  send:    DCMTK storescu +tls → storescp +tls        vs  dicombridge send (send.tls) → storescp +tls
plus the same pairs in plain DICOM, so the TLS overhead of each side shows as a ratio.

    python benchmarks/bench_tls.py [--images 500] [--repeats 3]
"""

from __future__ import annotations

import argparse
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.bench_receive import free_port, make_ct_study, send, wait_port, with_peer  # noqa: E402
from tests.conftest import write_config  # noqa: E402
from tests.peers import dcmtk  # noqa: E402
from tests.pki import make_pki  # noqa: E402


def with_storescp(work: Path, tls: tuple[str, ...], measure: Callable[[int], float]) -> float:
    """DCMTK storescp (writing files, as in bench_receive) around one measurement given its port."""
    port, out = free_port(), Path(tempfile.mkdtemp(dir=work))
    return with_peer([dcmtk("storescp"), *tls, "-aet", "STORESCP", "-od", str(out), str(port)], port,
                     lambda: measure(port))


def bridge_receive(study: Path, work: Path, client_tls: tuple[str, ...], **tls_settings: str) -> float:
    port = free_port()
    config = write_config(Path(tempfile.mkdtemp(dir=work)) / "c.toml", general__storage_folder=str(work / f"b{port}"),
                          general__min_free_mb=0, receive__port=port, **tls_settings)
    proc = subprocess.Popen([sys.executable, "-m", "bridge.cli", "--headless", "--config", str(config)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    try:
        wait_port(port)
        return send(study, port, "CRYPE_DCM", *client_tls)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)


def bridge_send(study: Path, work: Path, port: int, **tls_settings: object) -> float:
    config = write_config(Path(tempfile.mkdtemp(dir=work)) / "c.toml", general__storage_folder=str(work / "send"),
                          send__host="127.0.0.1", send__port=port, send__ae_title_receiver="STORESCP",
                          **tls_settings)
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "bridge.cli", "send", str(study), "--config", str(config)],
                   check=True, capture_output=True, timeout=1800, cwd=ROOT)
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        study = make_ct_study(work / "study", args.images)
        pki = make_pki(work / "pki")
        server = ("+tls", str(pki.server.key), str(pki.server.cert), "+cf", str(pki.ca))
        client = ("+tls", str(pki.client.key), str(pki.client.cert), "+cf", str(pki.ca))
        receive_tls = dict(receive__tls_cert=str(pki.server.cert), receive__tls_key=str(pki.server.key),
                           receive__tls_ca=str(pki.ca))
        send_tls = dict(send__tls=True, send__tls_ca=str(pki.ca), send__tls_cert=str(pki.client.cert),
                        send__tls_key=str(pki.client.key))
        runs: dict[str, list[float]] = {}
        for _ in range(args.repeats):  # alternate, so drift hits every variant alike
            for name, measure in {
                "receive plain: storescu -> storescp": lambda: with_storescp(work, (), lambda p: send(study, p, "STORESCP")),
                "receive plain: storescu -> bridge": lambda: bridge_receive(study, work, ()),
                "receive TLS: storescu -> storescp": lambda: with_storescp(work, server, lambda p: send(study, p, "STORESCP", *client)),
                "receive TLS: storescu -> bridge": lambda: bridge_receive(study, work, client, **receive_tls),
                "send TLS: storescu -> storescp": lambda: with_storescp(work, server, lambda p: send(study, p, "STORESCP", *client)),
                "send TLS: dicombridge send -> storescp": lambda: with_storescp(work, server, lambda p: bridge_send(study, work, p, **send_tls)),
                "send plain: dicombridge send -> storescp": lambda: with_storescp(work, (), lambda p: bridge_send(study, work, p)),
            }.items():
                runs.setdefault(name, []).append(measure())
        median = {name: statistics.median(values) for name, values in runs.items()}
        for name, value in median.items():
            print(f"{name:45s} {value:6.2f} s  (runs: {', '.join(f'{v:.2f}' for v in runs[name])})")
        print(f"bridge/storescp receive, plain: {median['receive plain: storescu -> bridge'] / median['receive plain: storescu -> storescp']:.2f}x; "
              f"TLS: {median['receive TLS: storescu -> bridge'] / median['receive TLS: storescu -> storescp']:.2f}x")
        print(f"bridge send TLS / storescu TLS: {median['send TLS: dicombridge send -> storescp'] / median['send TLS: storescu -> storescp']:.2f}x; "
              f"TLS cost for the bridge's send: {median['send TLS: dicombridge send -> storescp'] / median['send plain: dicombridge send -> storescp']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
