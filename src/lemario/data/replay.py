"""The flywheel's bounded, stratified replay selection (the seed's M3).

The corpus keeps every episode; what the world model trains on is a selection of it:
- at most `capacity` trajectories, newest first, except that tiers marked `protected` (the elite, max_x >= 1500
  by default) are never evicted;
- each tier may cap its share of the selected *frames* (one stuck trajectory is ~1500 frames, one early death
  ~50): the stuck tier 200-700 at 30% by default. Over-cap tiers lose their oldest trajectories first. A
  corpus holding nothing but a capped tier keeps it whole (there is no mix to balance);
- a corpus of several levels is selected level by level, the capacity shared equally among them;
- the caps are for the level the tiers' stretches of x were drawn on (1-1: its flag at x 3161, a stuck episode
  stands at 200-700); on any other level the same x means another place (most of a castle level's random episodes
  end at 300-400), so its episodes are kept by capacity and protection alone: capping them as 1-1's once left a
  six-level selection 4 of 1-4's 200 episodes and 2 of 2-4's (docs/RESULTS.md, session 38).
The audit table (`lemario.data.tiers.audit`) of every selection is printed and saved by the flywheel.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from lemario.data.tiers import TIERS, Tier, frames, tier_of


@dataclass(frozen=True)
class ReplayConfig:
    capacity: int = 5000
    """Trajectories kept (protected tiers do not count against it)."""
    tiers: tuple[Tier, ...] = field(default_factory=lambda: TIERS)
    """The tier table with its caps and protections (`lemario.data.tiers`)."""
    tiers_level: str = "1-1"
    """The level the tiers' caps are for; other levels' episodes are not capped (an episode with no level: this one)."""


def select(rows: list[dict], cfg: ReplayConfig) -> list[dict]:
    """The episodes to train on. rows: index rows (file, n_steps, max_x, flag_get[, level]), oldest first (file
    order: a sub-corpus's episodes, such as the flywheel's exploration, after the folder's own). The episodes of
    several levels are selected level by level, each with an equal share of the capacity and its own tier caps (a
    tier is a stretch of max_x, which means something only within one level)."""
    levels = sorted({r.get("level") for r in rows}, key=str)
    if len(levels) < 2:
        return _select_level(rows, cfg, levels[0] if levels else None)
    share = replace(cfg, capacity=max(1, cfg.capacity // len(levels))) if cfg.capacity > 0 else cfg
    chosen = {id(r) for lv in levels for r in _select_level([r for r in rows if r.get("level") == lv], share, lv)}
    return [r for r in rows if id(r) in chosen]


def _select_level(rows: list[dict], cfg: ReplayConfig, level: str | None) -> list[dict]:
    """`select` on the episodes of one level (None: unnamed, the tiers' own)."""
    tiers = cfg.tiers
    if level not in (None, cfg.tiers_level):
        tiers = tuple(replace(t, max_frame_share=None) for t in tiers)
    protected = [r for r in rows if tier_of(r, tiers).protected]
    rest = [r for r in rows if not tier_of(r, tiers).protected][-cfg.capacity :] if cfg.capacity > 0 else []
    chosen = protected + rest
    for tier in tiers:
        if tier.max_frame_share is None:
            continue
        mine = [r for r in chosen if tier_of(r, tiers) is tier]  # oldest first
        others = frames(chosen) - frames(mine)
        if others == 0:  # a share of a mix: with nothing else to train on, the tier is kept whole
            continue
        # keep the newest of this tier while its share stays within the cap: f / (others + f) <= cap
        budget = (
            tier.max_frame_share * others / (1 - tier.max_frame_share) if tier.max_frame_share < 1 else float("inf")
        )
        kept, used = [], 0
        for r in reversed(mine):
            if used + r["n_steps"] + 1 <= budget:
                kept.append(r)
                used += r["n_steps"] + 1
        drop = {id(r) for r in mine} - {id(r) for r in kept}
        chosen = [r for r in chosen if id(r) not in drop]
    order = {id(r): i for i, r in enumerate(rows)}
    return sorted(chosen, key=lambda r: order[id(r)])
