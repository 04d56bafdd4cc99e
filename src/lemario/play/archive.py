"""The exploration archive (Go-Explore's): cells of the game, each holding the cheapest known way to reach it.

A cell is a coarse summary of a moment of play:
- `frame` (the default, domain-agnostic, as Go-Explore's): the newest observation frame area-downscaled to
  11 x 8 pixels with 8 grey levels;
- `ram`: Mario's x in 32-pixel columns and his y in 16-pixel rows, read from the RAM.

Each cell keeps the emulator state at the end of the cheapest trajectory found to it (fewest agent steps from
spawn), where Mario was, when the run found it, and how often it was chosen and seen. Cells where Mario is dying or
has the flag are kept (the flag is the point) but never chosen. Choosing draws cells with weights

    1 / sqrt(1 + chosen) + 1 / sqrt(1 + seen)        Go-Explore's count-based terms: rarely chosen, rarely seen
    + far * x / max_x                                 far along the level
    + recent * [found in the last `recent_rounds`]    recently found
    + novelty * N                                     new to a world model: its ensemble's disagreement on
                                                      the step that found the cell (Plan2Explore's signal),
                                                      N = novelty / max novelty (`novelty_scale` 'max') or
                                                      the share of cells less novel ('rank')

On disk (OUT/archive/): `cells.json`, the table a person reads (the run's totals, one row per round, one per cell)
and `states/round-RRRRRR.npz`, the states a round found (one file, one fsync, a round). A round writes its state
file first and cells.json last (atomically), so a kill leaves the previous round's archive whole; state files no
cell names any more are removed.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import zlib
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from lemario.core.errors import LemarioError
from lemario.core.files import atomic_write_bytes, read_json, write_rows_json
from lemario.games.mario.env import MarioState

CELL_KINDS = ("frame", "ram")
FRAME_CELL = (11, 8, 8)
"""(width, height, grey levels) of a frame cell."""


def cell_key(kind: str, frame: np.ndarray, info: dict) -> str:
    """The cell of a moment: `frame` is the newest observation frame (H, W[, 3]) uint8, `info` the env's labels."""
    if kind == "ram":
        return f"x{int(info['x_pos']) // 32}-y{int(info['y_pos']) // 16}"
    if frame.ndim == 3:
        frame = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
    w, h, levels = FRAME_CELL
    small = cv2.resize(frame, (w, h), interpolation=cv2.INTER_AREA)  # (h, w)
    return (small.astype(np.int32) * levels // 256).astype(np.uint8).tobytes().hex()


@dataclass
class Cell:
    key: str
    steps: int
    """Agent steps from spawn of the cheapest known way here."""
    x: int
    y: int
    found_round: int
    found_env_steps: int
    """The run's env steps when the cell was first found."""
    state_file: str
    """Where its state is: 'round-RRRRRR.npz:ENTRY' under states/ ('' for a terminal cell: nothing to return to)."""
    chosen: int = 0
    seen: int = 0
    terminal: bool = False
    """Mario dying, or the flag: never chosen."""
    flag: bool = False
    novelty: float = 0.0
    """A world-model ensemble's disagreement on the step of the way here (0 without a world model)."""


STATE_MAGIC = b"LMS1"
"""The first bytes of a decompressed state since session 40 (before: a zip, from `np.savez`)."""


def state_bytes(state: MarioState) -> bytes:
    """A saved state as zlib level 1 over STATE_MAGIC, a JSON header (level, backend, each array's dtype and shape)
    and the arrays' raw bytes: an exploration encodes every cell it finds, in its worker, and this is 1.7x faster
    than the same arrays through `np.savez` (0.4 against 0.7 ms a state on this host)."""
    arrays = {
        "buttons": np.frombuffer(state.buttons, np.uint8),
        "snapshot": np.frombuffer(state.snapshot or b"", np.uint8),
        "stack": np.ascontiguousarray(state.stack),
        "ram": np.ascontiguousarray(state.ram),
        "rgb": np.ascontiguousarray(state.rgb),
    }
    header = json.dumps(
        {
            "level": state.level,
            "backend": state.backend,
            "has_snapshot": state.snapshot is not None,
            "arrays": [[k, a.dtype.str, list(a.shape)] for k, a in arrays.items()],
        }
    ).encode()
    z = zlib.compressobj(1)
    parts = [z.compress(STATE_MAGIC + len(header).to_bytes(4, "little") + header)]
    parts += [z.compress(a.data) for a in arrays.values()]
    return b"".join([*parts, z.flush()])


def state_from_bytes(data: bytes) -> MarioState:
    """The state `state_bytes` wrote; archives of sessions 14-38 (`np.savez_compressed`, a zip) and 39 (zlib over
    `np.savez`) load too."""
    raw = data if data[:2] == b"PK" else zlib.decompress(data)
    if raw[:4] != STATE_MAGIC:
        return _state_from_npz(raw)
    n = int.from_bytes(raw[4:8], "little")
    header = json.loads(raw[8 : 8 + n])
    arrays, at = {}, 8 + n
    for name, dtype, shape in header["arrays"]:
        count = int(np.prod(shape))
        arrays[name] = np.frombuffer(raw, dtype, count=count, offset=at).reshape(shape)
        at += count * np.dtype(dtype).itemsize
    return MarioState(
        level=header["level"],
        backend=header["backend"],
        buttons=arrays["buttons"].tobytes(),
        snapshot=arrays["snapshot"].tobytes() if header["has_snapshot"] else None,
        stack=arrays["stack"].copy(),
        ram=arrays["ram"].copy(),
        rgb=arrays["rgb"].copy(),
    )


def _state_from_npz(raw: bytes) -> MarioState:
    with np.load(io.BytesIO(raw)) as z:
        return MarioState(
            level=str(z["level"]),
            backend=str(z["backend"]),
            buttons=z["buttons"].tobytes(),
            snapshot=z["snapshot"].tobytes() if bool(z["has_snapshot"]) else None,
            stack=z["stack"],
            ram=z["ram"],
            rgb=z["rgb"],
        )


NOVELTY_SCALES = ("max", "rank")


@dataclass(frozen=True)
class Choosing:
    """How cells are chosen to return to."""

    far: float = 1.0
    recent: float = 0.5
    recent_rounds: int = 5
    novelty: float = 1.0
    """Weight of the disagreement term (it is 0 for every cell unless the run scores cells with a world model)."""
    novelty_scale: str = "max"
    """'max': a cell's disagreement over the largest (heavy-tailed: on 1-1 the median cell's term is 0.02, session
    39); 'rank': the share of choosable cells whose disagreement is lower (uniform over [0, 1], as far's x / max_x)."""

    def validate(self) -> None:
        if self.novelty_scale not in NOVELTY_SCALES:
            raise LemarioError(
                f"unknown --choosing.novelty-scale {self.novelty_scale!r}: use one of {', '.join(NOVELTY_SCALES)}"
            )


class Archive:
    """The cells of a run and its totals; `load` / `save` keep them in a folder."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.cells: dict[str, Cell] = {}
        self.round = 0
        self.env_steps = 0
        self.restores = 0
        self.emulator_frames = 0
        self.flag_env_steps: int | None = None
        self.rounds: list[dict] = []
        self._pending: dict[str, dict[str, bytes]] = {}  # file -> entry -> state bytes, not yet written (`save`)

    @classmethod
    def load(cls, folder: Path) -> Archive:
        """The archive saved in `folder` (an empty one where there is none); orphan state files are removed."""
        archive = cls(folder)
        path = archive.folder / "cells.json"
        if path.exists():
            d = read_json(path)
            archive.round, archive.env_steps = d["round"], d["env_steps"]
            archive.restores, archive.emulator_frames = d["restores"], d["emulator_frames"]
            archive.flag_env_steps, archive.rounds = d["flag_env_steps"], d["rounds"]
            archive.cells = {c["key"]: Cell(**c) for c in d["cells"]}
        archive.prune()
        return archive

    def prune(self) -> None:
        """Remove the state files no cell names (their states replaced by cheaper ways, or written by an unfinished
        round)."""
        named = {c.state_file.partition(":")[0] for c in self.cells.values()}
        for f in (self.folder / "states").glob("*.npz"):
            if f.name not in named:
                f.unlink()

    def save(self, extra: dict | None = None) -> None:
        """The round's states (one file), then cells.json, atomically; then the state files no cell names."""
        for file, entries in self._pending.items():
            path = self.folder / "states" / file
            if path.exists():  # the round's file written before, by an earlier save
                with np.load(path) as z:
                    entries = {k: z[k].tobytes() for k in z.files} | entries
            buf = io.BytesIO()
            np.savez(buf, **{k: np.frombuffer(v, np.uint8) for k, v in entries.items()})
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(path, buf.getvalue())
        self._pending = {}
        cells = sorted(self.cells.values(), key=lambda c: (c.x, c.y, c.key))
        write_rows_json(
            self.folder / "cells.json",
            {
                **(extra or {}),
                "round": self.round,
                "env_steps": self.env_steps,
                "restores": self.restores,
                "emulator_frames": self.emulator_frames,
                "flag_env_steps": self.flag_env_steps,
                "n_cells": len(cells),
                "max_x": self.max_x,
                "rounds": self.rounds,
                "cells": [vars(c) for c in cells],  # flat rows: no deep copy, as asdict makes
            },
        )
        self.prune()

    @property
    def max_x(self) -> int:
        return max((c.x for c in self.cells.values()), default=0)

    @property
    def _states_file(self) -> str:
        return f"round-{self.round:06d}.npz"

    def state(self, key: str) -> bytes:
        """The cell's state as `state_bytes` encoded it (`state_from_bytes` decodes it, in the worker that restores
        it)."""
        file, _, entry = self.cells[key].state_file.partition(":")
        if entry in self._pending.get(file, {}):
            return self._pending[file][entry]
        with np.load(self.folder / "states" / file) as z:
            return z[entry].tobytes()

    def weights(self, cfg: Choosing) -> tuple[list[str], np.ndarray]:
        """(choosable cell keys in sorted order, their normalized choice probabilities)."""
        keys = sorted(k for k, c in self.cells.items() if not c.terminal)  # an order that survives a reload
        top = max(1, self.max_x)
        novelty = np.array([self.cells[k].novelty for k in keys])  # (n,)
        if cfg.novelty_scale == "rank":  # ties (every cell 0 without a world model) share the lowest rank
            novelty = np.searchsorted(np.sort(novelty), novelty, side="left") / max(1, len(keys) - 1)
        else:
            novelty = novelty / (novelty.max(initial=0.0) or 1.0)
        w = np.array(
            [
                1 / math.sqrt(1 + c.chosen)
                + 1 / math.sqrt(1 + c.seen)
                + cfg.far * c.x / top
                + cfg.recent * (self.round - c.found_round < cfg.recent_rounds)
                for c in (self.cells[k] for k in keys)
            ]
        )
        w = w + cfg.novelty * novelty
        return keys, w / w.sum()

    def choose(self, n: int, cfg: Choosing, rng: np.random.Generator) -> list[str]:
        """n cells to return to (with replacement); `count_chosen` counts them when their round is merged (the
        archive saved while the round plays has the counts it had before)."""
        keys, p = self.weights(cfg)
        return [keys[i] for i in rng.choice(len(keys), size=n, p=p)]

    def count_chosen(self, keys: list[str | None]) -> None:
        """The cells a round started from (None: spawn), counted as chosen."""
        for k in keys:
            if k is not None:
                self.cells[k].chosen += 1

    def add(self, key: str, steps: int, x: int, y: int, state: bytes | None, flag: bool, novelty: float = 0.0) -> None:
        """A way to `key` of `steps` steps, its end state encoded by `state_bytes` (None: a terminal moment). Kept
        when the cell is new or the way is better: alive where the cell's way dies (a cell first met dying stays
        reachable), else fewer steps. Its state is written by the next `save`, in the current round's file."""
        old = self.cells.get(key)
        if old is not None and (state is None, steps) >= (old.terminal, old.steps):
            return
        name = ""
        if state is not None:
            entry = f"{hashlib.blake2b(key.encode(), digest_size=8).hexdigest()}-{steps}"
            self._pending.setdefault(self._states_file, {})[entry] = state
            name = f"{self._states_file}:{entry}"
        found = (old.found_round, old.found_env_steps) if old else (self.round, self.env_steps)
        counts = (old.chosen, old.seen) if old else (0, 0)
        flag = flag or (old is not None and old.flag)  # a living way to the flag's cell keeps its star
        self.cells[key] = Cell(
            key, steps, x, y, *found, name, *counts, terminal=state is None, flag=flag, novelty=novelty
        )

    def merge(self, result: dict, frame_skip: int) -> None:
        """One exploration's result (`lemario.play.explore._explore`'s) into the archive: its env steps, restore and
        emulator frames (restores that replay a button log cost theirs), the ways it found, how often it saw each
        cell. The first exploration to touch the flag sets `flag_env_steps` (the run's env steps through its last
        step) and its cell shows the flag, whether or not the cell keeps that way: it often already holds a cheaper
        living one (Mario beside the pole)."""
        self.env_steps += result["steps"]
        self.restores += int(result["restored"])
        self.emulator_frames += result["steps"] * frame_skip + result["replayed_frames"]
        flag_cell = result["flag_cell"]
        if flag_cell is not None and self.flag_env_steps is None:
            self.flag_env_steps = self.env_steps
        for key, (_, steps, x, y, state, flag, novelty) in result["found"].items():
            self.add(key, steps, x, y, state, flag, novelty)
        if flag_cell is not None:
            self.cells[flag_cell].flag = True
        for key, n in result["seen"].items():
            self.cells[key].seen += n
