"""What makes a run reproducible from its folder: the code's git commit and the package version.

The commit is read once per process and kept: a run records the code it started with, even when the checkout
moves on while it runs (a training that lasts hours beside commits).
"""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path

from lemario import __version__


@functools.cache
def git_commit() -> str:
    """The commit of the lemario checkout (with '-dirty' when it has uncommitted changes), or 'unknown'."""
    root = Path(__file__).resolve().parents[3]
    try:
        sha = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        if sha.returncode != 0:
            return "unknown"
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        return sha.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def provenance() -> dict:
    return {"lemario_version": __version__, "git_commit": git_commit()}
