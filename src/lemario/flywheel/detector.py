"""The flywheel's improvement detector (the seed's M4): commit, branch or halt after each iteration.

An iteration is K policies trained with different seeds on one world model, each evaluated on the harness;
its score is the mean of the K means, its noise the sd between the K seeds (measured, never a constant).
Against the best iteration so far:

    z = (mean - best_mean) / pooled between-seed sd
    z >  threshold            -> commit   (a real improvement: the iteration becomes the new best)
    otherwise, and fewer than `patience` iterations since the last commit
                              -> branch   (re-run with one variable flipped)
    otherwise                 -> halt     (no improvement the noise cannot explain: an operator decides)

Every decision carries its evidence (means, sds, K, z, threshold, the flipped variable), so the log shows why.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

# What a branch flips, in turn (the flywheel knows how to apply each).
FLIPS = ("exploration", "entropy", "warm_start", "replay_caps")


@dataclass(frozen=True)
class IterationScore:
    """An iteration as the detector sees it."""

    iteration: int
    mean: float  # mean over the K seeds of each seed's mean max_x
    sd: float  # sd between the K seeds
    k: int
    verdict: str = ""  # its decision (commit | branch | halt), empty for the one being decided


@dataclass(frozen=True)
class Decision:
    """A verdict (commit | branch | halt) and its evidence; JSON keeps the verdict under "decision"."""

    verdict: str
    reason: str
    z: float
    threshold: float
    pooled_sd: float
    best_iteration: int | None
    best_mean: float | None
    mean: float
    sd: float
    k: int
    flip: str | None = None

    def to_json(self) -> dict:
        """The decision as stored in decision.json (the verdict under "decision")."""
        d = asdict(self)
        return {"decision": d.pop("verdict"), **d}

    @classmethod
    def from_json(cls, d: dict) -> Decision:
        """From to_json's form; other keys (a decision.json's iteration, applied flip, seed means) are ignored."""
        names = {f.name for f in fields(cls)} - {"verdict"}
        return cls(verdict=d["decision"], **{k: v for k, v in d.items() if k in names})


def pooled_sd(a: IterationScore, b: IterationScore) -> float:
    """The sd that a difference of two iterations' means is measured against: the root mean square of their sds."""
    return math.sqrt((a.sd**2 + b.sd**2) / 2)


def decide(
    history: list[IterationScore], current: IterationScore, threshold: float = 1.0, patience: int = 3
) -> Decision:
    """Commit, branch or halt for `current` against the best committed iteration of `history` (see the module)."""
    if current.k < 2 or not math.isfinite(current.sd):
        raise ValueError(
            f"iteration {current.iteration}: the detector needs K >= 2 seeds to measure the noise, got K = {current.k}"
        )
    committed = [h for h in history if h.verdict == "commit"]
    if not committed:
        return Decision(
            "commit",
            "first iteration",
            math.inf,
            threshold,
            current.sd,
            None,
            None,
            current.mean,
            current.sd,
            current.k,
        )
    best = max(committed, key=lambda h: h.mean)
    sd = pooled_sd(current, best)
    diff = current.mean - best.mean
    z = diff / sd if sd > 0 else (math.copysign(math.inf, diff) if diff else 0.0)  # noiseless seeds: any gain is real
    evidence = dict(
        z=z,
        threshold=threshold,
        pooled_sd=sd,
        best_iteration=best.iteration,
        best_mean=best.mean,
        mean=current.mean,
        sd=current.sd,
        k=current.k,
    )
    if z > threshold:
        return Decision(
            "commit",
            f"mean {current.mean:.0f} beats the best ({best.mean:.0f}, iter {best.iteration}) by "
            f"{z:.2f} pooled sd > {threshold}",
            **evidence,
        )
    since = 0
    for h in reversed(history):
        if h.verdict == "commit":
            break
        since += 1
    if since + 1 >= patience:
        return Decision(
            "halt", f"{since + 1} iterations without an improvement beyond {threshold} sd (z now {z:.2f})", **evidence
        )
    flip = FLIPS[since % len(FLIPS)]
    return Decision(
        "branch",
        f"z {z:.2f} <= {threshold}: within the seeds' noise or worse; re-run with {flip} flipped",
        flip=flip,
        **evidence,
    )
