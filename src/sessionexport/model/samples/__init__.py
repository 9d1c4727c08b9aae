"""The two sample sessions published with the original export documentation, exactly as published."""

from __future__ import annotations

from importlib import resources

MOBILE, WEB_SYNTHETIC = "doc-mobile-session.json", "doc-web-synthetic-session.json"


def doc_sample(name: str) -> bytes:
    """One sample: a single compact JSON line (without its trailing newline)."""
    return (resources.files(__name__) / name).read_bytes().strip()
