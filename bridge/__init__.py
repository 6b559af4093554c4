"""DicomBridge engine: receive studies from a PACS, zip them per study, send ZIPs back.

This package never imports Textual: the headless service and the terminal UI share it,
and ``tests/test_architecture.py`` proves the separation.
"""

__version__ = "0.1.0"
