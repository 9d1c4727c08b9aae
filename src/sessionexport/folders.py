"""Folders sessionexport creates for its data: private to the user running it.

A data directory holds sessions, token hashes and encrypted secrets; the files in it are created
with the process's umask (0644 commonly), so the folder is what keeps other users out. One that
exists already keeps its permissions (the README says to restrict it).
"""

from __future__ import annotations

from pathlib import Path

PRIVATE = 0o700


def make_private_dir(path: Path) -> None:
    """``path`` and its missing parents, each one it creates readable only by this user."""
    missing = [folder for folder in (path, *path.parents) if not folder.exists()]
    for folder in reversed(missing):
        folder.mkdir(mode=PRIVATE, exist_ok=True)
