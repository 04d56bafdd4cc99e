"""A run's log, metrics.jsonl: one JSON object per line, appended as the run goes.

Readers leave out a last line without its newline (a kill mid-write, or a live run mid-write); a resumed run
keeps only the rows of the timeline it continues (`keep_rows`), so every step is logged once.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

from lemario.core.files import atomic_write_text

NAME = "metrics.jsonl"


def append_row(path: Path, row: dict, durable: bool = False) -> None:
    """Append one row (a whole line, flushed when the call returns; on disk, fsynced, when `durable`)."""
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")
        if durable:
            f.flush()
            os.fsync(f.fileno())


def read_rows(path: Path) -> list[dict]:
    """Every whole row of a log (none when it does not exist)."""
    if not Path(path).exists():
        return []
    return [json.loads(line) for line in Path(path).read_text().split("\n")[:-1] if line]


def keep_rows(path: Path, keep: Callable[[dict], bool]) -> None:
    """Rewrite the log, atomically, with only the rows `keep` accepts (and no cut last line)."""
    if not Path(path).exists():
        return
    text = "".join(json.dumps(r) + "\n" for r in read_rows(path) if keep(r))
    if text != Path(path).read_text():
        atomic_write_text(Path(path), text)
