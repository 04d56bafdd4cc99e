"""The tiers of episodes by how far they got: one table for the corpus's audit and the flywheel's replay.

The seed's audit table showed where a corpus's frames come from (one stuck trajectory is ~1500 frames, one early
death ~50); its replay buffer capped the stuck tier's share of frames and never evicted the elite. A flag
episode counts as elite.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Tier:
    name: str
    lo: int
    hi: int | None  # exclusive; None: no upper bound
    max_frame_share: float | None = None
    """The most of the replay selection's frames this tier may hold (None: no cap)."""
    protected: bool = False
    """Never evicted from the replay selection."""


TIERS = (
    Tier("dead <200", 0, 200),
    Tier("stuck 200-700", 200, 700, max_frame_share=0.30),
    Tier("mid 700-1500", 700, 1500),
    Tier("elite >=1500", 1500, None, protected=True),
)


def tier_of(row: dict, tiers: tuple[Tier, ...] = TIERS) -> Tier:
    """The tier of an index row (max_x, flag_get)."""
    x = 10**9 if row.get("flag_get") else row["max_x"]
    for t in tiers:
        if x >= t.lo and (t.hi is None or x < t.hi):
            return t
    raise ValueError(f"max_x {row['max_x']} falls in no tier")


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
