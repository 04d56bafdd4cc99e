"""Which actions a Mario corpus shows at each place of the level: the action coverage a world model learns from.

A world model only knows the consequences of the actions its corpus took where they were taken: a corpus whose
policy never run-jumps (right+A+B) at the goomba pair teaches nothing about clearing it. The table counts the steps
taken from each bin of Mario's x (the x of the frame the action was chosen on) and the share of each action there,
split by where the episodes started (spawn, or a state restored by exploration: `start` in the episode's meta).

Action indices mean the same buttons in every set (right-only, simple and complex are prefixes of one another),
so episodes of different sets share the columns of the largest.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from lemario.core.errors import LemarioError
from lemario.data.corpus import episode_files, file_meta
from lemario.games.mario.actions import ACTION_SETS


@dataclass
class Coverage:
    bin_px: int
    actions: tuple[str, ...]  # column names, the largest action set seen
    counts: dict[str, np.ndarray]  # origin ('spawn' | 'restored') -> (bins, actions) steps

    def total(self) -> np.ndarray:
        """(bins, actions) steps of every origin."""
        return sum(self.counts.values())


def action_name(buttons: tuple[str, ...]) -> str:
    return "+".join(buttons) or "noop"


def action_coverage(corpus: Path, bin_px: int = 200, level: str | None = None) -> Coverage:
    """Steps per (x bin, action) of every Mario episode file of a corpus (its sub-corpora included), or of those
    on one `level` (x means another place on each level)."""
    if bin_px < 1:
        raise LemarioError(f"--bin-px {bin_px}: the bin width must be at least 1 pixel")
    per_origin: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {"spawn": [], "restored": []}
    n_actions = 0
    for path in episode_files(Path(corpus)):
        with h5py.File(path, "r") as f:
            meta = file_meta(f)
            if meta.get("game", "mario") != "mario" or level not in (None, meta["level"]):
                continue
            x = f["labels"][:-1, meta["label_names"].index("x_pos")]  # (T,) the x each action was chosen at
            actions = f["actions"][()]  # (T,)
        n_actions = max(n_actions, len(ACTION_SETS[meta["action_set"]]))
        origin = "spawn" if meta.get("start", "spawn") == "spawn" else "restored"
        per_origin[origin].append((x // bin_px, actions))
    if not n_actions:
        on = f" on level {level}" if level else ""
        raise LemarioError(f"{corpus} holds no Mario episode{on}: the action table is for Mario corpora")
    n_bins = 1 + max((int(b.max()) for pairs in per_origin.values() for b, _ in pairs if len(b)), default=0)
    counts = {}
    for origin, pairs in per_origin.items():
        table = np.zeros((n_bins, n_actions), np.int64)
        for bins, actions in pairs:
            np.add.at(table, (bins, actions), 1)
        counts[origin] = table
    names = next(s for s in ACTION_SETS.values() if len(s) == n_actions)
    return Coverage(bin_px, tuple(action_name(a) for a in names), counts)


def format_coverage(cov: Coverage, title: str = "") -> str:
    """The table: one row per x bin with steps, the restored share and each action's share of the bin's steps."""
    total = cov.total()  # (bins, actions)
    restored = cov.counts["restored"].sum(axis=1)
    width = max(7, *(len(a) + 1 for a in cov.actions))
    head = f"{'x':<11}{'steps':>8}{'restored':>9}" + "".join(f"{a:>{width}}" for a in cov.actions)
    lines = [f"actions by place{title} (share of the steps taken in each {cov.bin_px}-px bin of x)", head]
    for b, row in enumerate(total):
        n = row.sum()
        if not n:
            continue
        place = f"{b * cov.bin_px}-{(b + 1) * cov.bin_px - 1}"
        shares = "".join(f"{v / n:>{width}.0%}" for v in row)
        lines.append(f"{place:<11}{n:>8}{restored[b] / n:>9.0%}{shares}")
    n, d = total.sum(), max(1, total.sum())  # (a corpus of zero-step episodes has no step to share out)
    lines.append(f"{'all':<11}{n:>8}{restored.sum() / d:>9.0%}" + "".join(f"{v / d:>{width}.0%}" for v in total.sum(0)))
    return "\n".join(lines)
