"""Files that survive a crash: atomic writes, one writer per folder, an early check that a folder is writable."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import time
from contextlib import contextmanager
from pathlib import Path

from lemario.core.errors import LemarioError

SPACE_ERRNOS = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)
"""errno values of a full disk or a file-size limit."""


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes | memoryview) -> None:
    """Write a file so that a crash leaves either the old content or the new, never a mix: a temporary
    name, fsync, rename, fsync of the folder. Errors (a full disk) propagate as OSError, nothing left behind."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)


def atomic_write_text(path: Path, text: str) -> None:
    """`atomic_write_bytes` of UTF-8 text."""
    atomic_write_bytes(path, text.encode())


def write_json(path: Path, obj) -> None:
    """An indented JSON file written atomically (its folder created; paths and other objects as strings)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(obj, indent=2, default=str))


def write_rows_json(path: Path, obj: dict) -> None:
    """`obj` as JSON written atomically, a top-level key a line and each item of a list a line of its own: a table
    a person reads row by row, encoded by json's C encoder (an `indent` runs the pure-Python one: the exploration
    archive's cells.json took a fifth of a frame-cell run's time, rewritten every round)."""
    parts = []
    for k, v in obj.items():
        if isinstance(v, list) and v:
            rows = ",\n".join("    " + json.dumps(x, default=str) for x in v)
            parts.append(f"  {json.dumps(k)}: [\n{rows}\n  ]")
        else:
            parts.append(f"  {json.dumps(k)}: {json.dumps(v, default=str)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, "{\n" + ",\n".join(parts) + "\n}\n")


def read_json(path: Path):
    """The content of a JSON file."""
    return json.loads(Path(path).read_text())


@contextmanager
def writer_lock(folder: Path):
    """One writer per folder: an exclusive flock on FOLDER/.lock, released by the kernel even on SIGKILL."""
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise LemarioError(
            f"{folder} is being written by another lemario process (pid {holder}): wait for it to finish or use "
            "another folder"
        ) from None
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        for stale in folder.glob(".*.tmp"):  # left by a writer that was killed mid-file
            stale.unlink(missing_ok=True)
        yield
    finally:
        os.close(fd)


def check_writable(folder: Path) -> None:
    """Fail early with one line when the output folder cannot be created or written."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".probe.{os.getpid()}.tmp"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise LemarioError(f"cannot write to {folder} ({e.strerror}): choose a writable --out folder") from None


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
