"""Process-wide switches are set by one explicit call, not by importing a module (issue 17, item 7)."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def test_importing_the_bridge_sets_nothing_process_wide_and_configure_process_sets_it_all():
    script = textwrap.dedent("""
        import tempfile, zipfile, zlib
        from pynetdicom import _config
        import bridge.engine, bridge.adhoc_send, bridge.conformance, bridge.fast_store, bridge.fast_send  # all
        before = (_config.STORE_RECV_CHUNKED_DATASET, _config.UNRESTRICTED_STORAGE_SERVICE,
                  _config.STORE_SEND_CHUNKED_DATASET, zipfile.zlib is zlib, zipfile.crc32 is zlib.crc32,
                  tempfile.tempdir)
        assert before == (False, False, False, True, True, None), before
        from bridge.runtime import configure_process
        configure_process()
        configure_process("/nowhere")  # idempotent; the temp folder follows the last engine's storage
        configure_process()
        after = (_config.STORE_RECV_CHUNKED_DATASET, _config.UNRESTRICTED_STORAGE_SERVICE,
                 _config.STORE_SEND_CHUNKED_DATASET, zipfile.zlib.__name__, zipfile.crc32 is zlib.crc32,
                 tempfile.tempdir)
        assert after == (True, True, True, "isal.isal_zlib", False, "/nowhere"), after
        assert zipfile.crc32(b"123456789") == 0xCBF43926  # the same checksum (CRC-32 check value)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_a_stopped_engine_no_longer_holds_the_temp_folder(bridge_settings):
    """A later receiver (another engine, pynetdicom's SCP in a test) must not write into a stopped
    engine's folder, whose disk may be full or gone."""
    import tempfile

    from bridge.engine import Engine

    engine = Engine(bridge_settings)
    try:
        assert tempfile.gettempdir() == str(engine.layout.incoming)
    finally:
        engine.stop(grace_seconds=0)
    assert tempfile.tempdir is None
