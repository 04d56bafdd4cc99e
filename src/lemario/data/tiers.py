"""The tiers of episodes by how far they got: one table for the corpus's audit, the flywheel's replay and the
oversampling of training windows.

The seed's audit table showed where a corpus's frames come from (one stuck trajectory is ~1500 frames, one early
death ~50); its replay buffer capped the stuck tier's share of frames and never evicted the elite. A flag
episode is a tier of its own, above the elite. Training may draw each tier's windows with a weight
(`lemario.data.buffer.window_probabilities`), so the rare far and flag episodes are seen more often than their
share of frames.
"""

from __future__ import annotations

from dataclasses import dataclass

from lemario.core.errors import LemarioError


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
