"""Pooling recorded push matches: several model seeds' `lemario push match --out` records read as one player.

Matches are deterministic, so pooling the records of `push match --player model:A`, `model:B` and `model:C` gives
what `push match --player model:A model:B model:C` prints (the issue's win rates over 3 world-model seeds × 50
matches), without playing them again: per opponent, each record's win rate, the pooled rate with its bootstrap 95%
CI and the spread between the records; and, given another player's records in the same order, the pooled paired
difference (each record's matches against its partner's, on match seed and side).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import tyro

from lemario.core.errors import LemarioError
from lemario.core.files import write_json
from lemario.core.provenance import provenance
from lemario.core.runconfig import as_json
from lemario.play.push_match import paired, paired_line, pool_seeds, recorded_rows


@dataclass(frozen=True)
class PoolConfig:
    matches: tyro.conf.Positional[tuple[Path, ...]]
    """matches.json records of `lemario push match --out`, one per seed of one player (the same opponents)."""
    paired_with: tuple[Path, ...] = ()
    """Another player's records, one for each record above and in its order: the pooled difference, this player's
    minus that one's, each record's matches paired with its partner's."""
    out: Path | None = None
    """Folder for pool.json (the summaries); none: print only."""

    def validate(self) -> None:
        if not self.matches:
            raise LemarioError("give the matches.json records to pool: lemario push pool A/matches.json B/matches.json")
        if self.paired_with and len(self.paired_with) != len(self.matches):
            raise LemarioError(
                f"--paired-with has {len(self.paired_with)} records for {len(self.matches)} pooled ones: give one "
                "partner for each, in the same order"
            )


def by_opponent(records: list[list[dict]], opponent: str, paths: tuple[Path, ...]) -> list[list[dict]]:
    """Each record's rows against `opponent`; a record without any is refused in one line."""
    out = [[r for r in rows if r.get("opponent") == opponent] for rows in records]
    for rows, path in zip(out, paths):
        if not rows:
            raise LemarioError(f"{path} has no match against {opponent}: pool records of the same opponents")
    return out


def pool_main(cfg: PoolConfig) -> None:
    cfg.validate()
    mine = [recorded_rows(p, "push pool") for p in cfg.matches]
    theirs = [recorded_rows(p, "--paired-with") for p in cfg.paired_with]
    opponents = list(dict.fromkeys(r.get("opponent") for r in mine[0]))
    summaries = {}
    for opponent in opponents:
        per = by_opponent(mine, opponent, cfg.matches)
        s = summaries[opponent] = pool_seeds([(p.parent.name or str(p), r) for p, r in zip(cfg.matches, per)], opponent)
        if theirs:
            other = by_opponent(theirs, opponent, cfg.paired_with)
            s["paired"] = paired([r for rows in per for r in rows], [r for rows in other for r in rows])
            print(paired_line(f"{len(other)} records", s["paired"]), flush=True)
    if cfg.out is not None:
        write_json(cfg.out / "pool.json", {"config": as_json(cfg), **provenance(), "summaries": summaries})
