"""Folders as a deployment may present them to sessionexport."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def read_only_view(folder: Path, view: Path) -> Iterator[Path]:
    """``folder`` seen where this process may not write: a read-only bind mount for root (whom
    permission bits do not stop), the folder's write permission taken away for anyone else."""
    view.mkdir()
    if os.geteuid() != 0:
        modes = {path: path.stat().st_mode for path in (folder, *folder.iterdir())}
        for path in modes:
            path.chmod(modes[path] & ~0o222)
        try:
            yield folder
        finally:
            for path, mode in modes.items():
                path.chmod(mode)
        return
    mounted = subprocess.run(["mount", "--bind", str(folder), str(view)], capture_output=True, text=True)
    assert mounted.returncode == 0, f"root here, and yet: {mounted.stderr}"
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(view)], check=True)
        yield view
    finally:
        if subprocess.run(["umount", str(view)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "--lazy", str(view)], check=True)  # not left behind the tests
            raise AssertionError(f"{view} was still in use: a file of it was left open")
