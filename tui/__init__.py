"""Textual terminal UI over the DicomBridge engine (Log Book and Settings screens).

Built in the Terminal UI issue; the engine in ``bridge`` must never import from here.
"""
