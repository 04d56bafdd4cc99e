"""The tiers of episodes by how far they got: one table for the corpus's audit, the flywheel's replay and the
oversampling of training windows.

The seed's audit table showed where a corpus's frames come from (one stuck trajectory is ~1500 frames, one early
death ~50); its replay buffer capped the stuck tier's share of frames and never evicted the elite. A flag
episode is a tier of its own, above the elite. Training may draw each tier's windows with a weight
(`window_probabilities`), so the rare far and flag episodes are seen more often than their share of frames.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lemario.core.errors import LemarioError
from lemario.games.mario.ram import LABELS


@dataclass(frozen=True)
class Tier:
    name: str
    lo: int
    hi: int | None  # exclusive; None: no upper bound
    max_frame_share: float | None = None
    """The most of the replay selection's frames this tier may hold (None: no cap)."""
    protected: bool = False
    """Never evicted from the replay selection."""


FLAG_X = 10**9
"""Where a flag episode stands in the tiers, whatever its max_x."""
TIERS = (
    Tier("dead <200", 0, 200),
    Tier("stuck 200-700", 200, 700, max_frame_share=0.30),
    Tier("mid 700-1500", 700, 1500),
    Tier("elite >=1500", 1500, FLAG_X, protected=True),
    Tier("flag", FLAG_X, None, protected=True),
)


def tier_of(row: dict, tiers: tuple[Tier, ...] = TIERS) -> Tier:
    """The tier of an index row (max_x, flag_get)."""
    return tiers[tier_index(row["max_x"], row.get("flag_get", 0), tiers)]


def tier_index(max_x: int, flag_get: int, tiers: tuple[Tier, ...] = TIERS) -> int:
    x = FLAG_X if flag_get else max_x
    for i, t in enumerate(tiers):
        if x >= t.lo and (t.hi is None or x < t.hi):
            return i
    raise ValueError(f"max_x {max_x} falls in no tier")


def frames(rows: list[dict]) -> int:
    """Frames of index rows (steps + the reset frame each)."""
    return sum(r["n_steps"] + 1 for r in rows)


def audit(rows: list[dict], tiers: tuple[Tier, ...] = TIERS) -> list[dict]:
    """The audit table: per tier, its episodes, their frames and their share of all frames."""
    total = max(1, frames(rows))
    out = []
    for t in tiers:
        mine = [r for r in rows if tier_of(r, tiers) is t]
        out.append({"tier": t.name, "episodes": len(mine), "frames": frames(mine), "share": frames(mine) / total})
    return out


def check_weights(weights: tuple[float, ...]) -> None:
    """Refuse tier weights that are not one number >= 0 per tier (empty: none)."""
    if weights and (len(weights) != len(TIERS) or min(weights) < 0):
        names = ", ".join(t.name for t in TIERS)
        raise LemarioError(
            f"--oversample {' '.join(map(str, weights))}: give {len(TIERS)} weights >= 0, one per tier ({names})"
        )


def window_probabilities(
    starts: np.ndarray, episode_starts: np.ndarray, labels: np.ndarray, weights: tuple[float, ...]
) -> np.ndarray | None:
    """Probabilities of drawing each window start (n,) when a window of a tier-i episode weighs weights[i] (per
    TIERS); None for uniform (no weights, or all equal). episode_starts (E,): each episode's first frame in the
    buffer; labels (N, L): the buffer's RAM labels, whose max x_pos and flag_get place each episode in its tier."""
    check_weights(weights)
    if not weights or len(set(weights)) == 1:
        return None
    ends = np.r_[episode_starts[1:], len(labels)]
    x, flag = labels[:, LABELS.index("x_pos")], labels[:, LABELS.index("flag_get")]
    tier = [tier_index(int(x[a:b].max()), int(flag[a:b].max())) for a, b in zip(episode_starts, ends)]
    episode_of = np.searchsorted(episode_starts, starts, side="right") - 1
    w = np.asarray(weights, np.float64)[np.asarray(tier)[episode_of]]
    if w.sum() == 0:
        raise LemarioError(f"--oversample {weights} gives every training window weight 0: weigh a tier it holds")
    return w / w.sum()
