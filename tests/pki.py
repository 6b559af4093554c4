"""A throw-away certificate authority for the TLS tests, made with the openssl command.

RSA keys, because DCMTK's default TLS profile (BCP 195) offers only RSA cipher suites. The
server certificate names 127.0.0.1 and localhost, as a PACS certificate names its host.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from .peers import system_tool


@dataclass(frozen=True)
class Identity:
    cert: Path
    key: Path


@dataclass(frozen=True)
class Pki:
    ca: Path
    server: Identity
    client: Identity
    other_ca: Path  # a CA that signed nothing here: trusting it must fail


def _openssl(*args: str | Path) -> None:
    subprocess.run([system_tool("openssl", "openssl"), *map(str, args)], check=True, capture_output=True, timeout=60)


def _make_ca(folder: Path, name: str) -> tuple[Path, Path]:
    cert, key = folder / f"{name}.crt", folder / f"{name}.key"
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={name}",
             "-keyout", key, "-out", cert, "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    return cert, key


def _issue(folder: Path, name: str, ca: tuple[Path, Path], usage: str, days: int = 2) -> Identity:
    key, csr, cert, ext = (folder / f"{name}.{suffix}" for suffix in ("key", "csr", "crt", "ext"))
    ext.write_text("basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
                   f"extendedKeyUsage={usage}\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _openssl("req", "-new", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout", key, "-out", csr)
    _openssl("x509", "-req", "-in", csr, "-CA", ca[0], "-CAkey", ca[1], "-CAcreateserial", "-days", str(days),
             "-extfile", ext, "-out", cert)
    key.chmod(0o600)
    return Identity(cert, key)


def make_pki(folder: Path) -> Pki:
    folder.mkdir(parents=True, exist_ok=True)
    ca = _make_ca(folder, "practice-ca")
    other_ca, _ = _make_ca(folder, "other-ca")
    return Pki(ca=ca[0], server=_issue(folder, "server", ca, "serverAuth"),
               client=_issue(folder, "client", ca, "clientAuth"), other_ca=other_ca)


def issue_expired(folder: Path, name: str, ca_cert: Path, usage: str) -> Identity:
    """A certificate of the practice CA that expired yesterday (``-days -1``)."""
    return _issue(folder, name, (ca_cert, ca_cert.with_suffix(".key")), usage, days=-1)
