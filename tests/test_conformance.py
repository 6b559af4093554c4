"""The conformance statement says what the code does: its tables are regenerated and compared,
and DCMTK's echoscu sees the implementation UID and maximum PDU size the statement promises."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from bridge import conformance, receiver

from .peers import PEER_ENV, dcmtk

DOCUMENT = Path(__file__).resolve().parent.parent / "docs" / "conformance-statement.md"


def test_the_statement_matches_the_code():
    text = DOCUMENT.read_text(encoding="utf-8")
    assert conformance.with_tables(text) == text, f"stale: run {conformance.COMMAND}"


def test_the_tables_follow_the_receiver(monkeypatch):
    monkeypatch.setattr(receiver, "MAX_PDU_BYTES", 65536)
    monkeypatch.setattr(receiver, "STATUS_DUPLICATE_REFUSED", 0xA701, raising=False)
    text = conformance.with_tables(DOCUMENT.read_text(encoding="utf-8"))
    assert "| Maximum PDU size received | 65536 bytes |" in text
    assert "| 0xA701 | Duplicate refused |" in text  # a new status constant appears by itself


def test_missing_markers_are_refused():
    with pytest.raises(ValueError, match="markers"):
        conformance.with_tables("# no tables here\n")


def test_every_storage_sop_class_and_verification_are_listed():
    table = conformance.scp_sop_classes()
    assert "`1.2.840.10008.1.1`" in table  # Verification
    assert "`1.2.840.10008.5.1.4.1.1.2`" in table  # CT Image Storage
    assert "Any other storage SOP class" in table


def test_storage_commitment_is_listed_for_the_receiver_and_the_sender():
    assert "| Storage Commitment Push Model SOP Class | `1.2.840.10008.1.20.1` | SCU: takes N-EVENT-REPORT" \
        in conformance.scp_sop_classes()
    assert "Action Type ID 1 on the well-known instance `1.2.840.10008.1.20.1.1`" in conformance.sender_commitment()


@pytest.mark.peers
def test_dcmtk_sees_what_the_statement_promises(running_bridge):
    result = subprocess.run([dcmtk("echoscu"), "-d", "-aec", "CRYPE_DCM", "127.0.0.1", str(running_bridge.port)],
                            check=False, capture_output=True, text=True, timeout=60, env=PEER_ENV)
    assert result.returncode == 0, result.stderr
    seen = result.stdout + result.stderr

    def theirs(item: str) -> str:
        """The value echoscu parsed from the bridge's A-ASSOCIATE-AC (the last time it prints it)."""
        return re.findall(rf"Their {item}:[^\S\n]*(\S*)", seen)[-1]

    text = DOCUMENT.read_text(encoding="utf-8")
    assert f"| Implementation Class UID | `{theirs('Implementation Class UID')}` |" in text
    assert f"| Implementation Version Name | `{theirs('Implementation Version Name')}` |" in text
    assert f"| Maximum PDU size received | {theirs('Max PDU Receive Size')} bytes |" in text
