"""The flywheel's improvement detector (the seed's M4): commit, branch or halt after each iteration.

An iteration is K policies trained with different seeds in each of its W world models (W = 1 unless asked), each
evaluated on the harness; its score is the mean of the policies' means. Against the best committed iteration:

    rule 'components' (the default; issue 19)
        se = sqrt(world_model_var / W + sd^2 / (W K))     the iteration mean's standard error, with sd the
                                                          between-policy sd (within world models) and
                                                          world_model_var measured by `lemario study variance`
        z  = (mean - best_mean) / sqrt(se^2 + best_se^2)  threshold 1.645: 5% false commits, one-sided
    rule 'seeds' (before issue 19)
        z  = (mean - best_mean) / pooled between-seed sd  (the policy spread alone, in sds, not standard errors)

    z >  threshold            -> commit   (a real improvement: the iteration becomes the new best)
    otherwise, and fewer than `patience` iterations since the last commit
                              -> branch   (re-run with one variable flipped)
    otherwise                 -> halt     (no improvement the noise cannot explain: an operator decides)

The policies of one iteration share its world models, so their spread cannot show the world models' own
training noise: without a measured world-model component the 'components' rule says so in every decision. A study of
3 world models measures that component loosely (the residual preset's: sd 0, 95% interval [0, 387]); given the
interval's top, a decision also states its z there (`z_high`), so a commit that rests on the estimate alone shows it.
Every decision carries its evidence (means, sds, K, W, standard errors, z, threshold, the flipped variable).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from lemario.core.errors import LemarioError
from lemario.core.files import read_json

# What a branch flips, in turn (the flywheel knows how to apply each).
FLIPS = ("exploration", "entropy", "warm_start", "replay_caps")


RULES = ("components", "seeds")


@dataclass(frozen=True)
class IterationScore:
    """An iteration as the detector sees it."""

    iteration: int
    mean: float  # mean over the policies of each policy's mean max_x
    sd: float  # sd between the policies' means (within world models)
    k: int  # policies per world model
    verdict: str = ""  # its decision (commit | branch | halt), empty for the one being decided
    world_models: int = 1

    def se(self, world_model_var: float) -> float:
        """Standard error of `mean`: the world models' training noise and the policies' (whose means carry
        their episodes' noise too)."""
        w = self.world_models
        return math.sqrt(world_model_var / w + self.sd**2 / (w * self.k))


@dataclass(frozen=True)
class Decision:
    """A verdict (commit | branch | halt) and its evidence; JSON keeps the verdict under "decision"."""

    verdict: str
    reason: str
    z: float
    threshold: float
    pooled_sd: float
    """What the gain is divided by: the standard error of the difference (rule components) or the pooled
    between-seed sd (rule seeds)."""
    best_iteration: int | None
    best_mean: float | None
    mean: float
    sd: float
    k: int
    flip: str | None = None
    rule: str = "seeds"  # decisions stored before issue 19 lack it: they were all made by the seeds rule
    se: float | None = None
    best_se: float | None = None
    world_model_var: float | None = None
    world_models: int = 1
    world_model_var_high: float | None = None
    """The top of the world-model component's 95% interval (a study's), when known."""
    z_high: float | None = None
    """z with the world-model component at `world_model_var_high`."""

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


def noise(current: IterationScore, best: IterationScore, rule: str, world_model_var: float | None) -> tuple[float, str]:
    """(what the gain over `best` is divided by, its unit in words) under a rule."""
    if rule == "seeds":
        return pooled_sd(current, best), "pooled sd"
    wm_var = world_model_var or 0.0
    unit = "standard errors" + (
        " (policy noise only: no world-model variance measured)" if world_model_var is None else ""
    )
    return math.sqrt(current.se(wm_var) ** 2 + best.se(wm_var) ** 2), unit


def at_top(current: IterationScore, best: IterationScore, var_high: float | None, z: float) -> tuple[float | None, str]:
    """z with the world-model component at its interval's top `var_high` (`z` where the difference has no noise),
    and the words a decision adds for it; (None, '') without a top."""
    if var_high is None:
        return None, ""
    se = math.sqrt(current.se(var_high) ** 2 + best.se(var_high) ** 2)
    z_high = (current.mean - best.mean) / se if se > 0 else z
    return z_high, f"; {z_high:.2f} at the world-model component's 95% top (sd {math.sqrt(var_high):.0f})"


def since_commit(history: list[IterationScore]) -> int:
    """Iterations since the last commit."""
    since = 0
    for h in reversed(history):
        if h.verdict == "commit":
            break
        since += 1
    return since


def decide(
    history: list[IterationScore],
    current: IterationScore,
    threshold: float = 1.645,
    patience: int = 3,
    rule: str = "components",
    world_model_var: float | None = None,
    world_model_var_high: float | None = None,
) -> Decision:
    """Commit, branch or halt for `current` against the best committed iteration of `history` (see the module).
    `world_model_var` (rule components): the world-model component of a variance study; None: unmeasured (0);
    `world_model_var_high`: its interval's top, for `z_high` (it does not change the verdict)."""
    if rule not in RULES:
        raise ValueError(f"unknown detector rule {rule!r}: use one of {', '.join(RULES)}")
    if current.k < 2 or not math.isfinite(current.sd):
        raise ValueError(
            f"iteration {current.iteration}: the detector needs K >= 2 seeds to measure the noise, got K = {current.k}"
        )
    components = rule == "components"
    evidence = dict(threshold=threshold, mean=current.mean, sd=current.sd, k=current.k, rule=rule)
    evidence.update(world_models=current.world_models)
    if components:
        evidence.update(se=current.se(world_model_var or 0.0), world_model_var=world_model_var)
        evidence.update(world_model_var_high=world_model_var_high)
    committed = [h for h in history if h.verdict == "commit"]
    if not committed:
        first = evidence["se"] if components else current.sd
        return Decision(
            "commit", "first iteration", math.inf, pooled_sd=first, best_iteration=None, best_mean=None, **evidence
        )
    best = max(committed, key=lambda h: h.mean)
    sd, unit = noise(current, best, rule, world_model_var)
    diff = current.mean - best.mean
    z = diff / sd if sd > 0 else (math.copysign(math.inf, diff) if diff else 0.0)  # noiseless seeds: any gain is real
    evidence.update(z=z, pooled_sd=sd, best_iteration=best.iteration, best_mean=best.mean)
    z_high, top = at_top(current, best, world_model_var_high, z) if components else (None, "")
    if components:
        evidence.update(best_se=best.se(world_model_var or 0.0), z_high=z_high)
    if z > threshold:
        return Decision(
            "commit",
            f"mean {current.mean:.0f} beats the best ({best.mean:.0f}, iter {best.iteration}) by "
            f"{z:.2f} {unit} > {threshold}{top}",
            **evidence,
        )
    since = since_commit(history)
    if since + 1 >= patience:
        return Decision(
            "halt",
            f"{since + 1} iterations without an improvement beyond {threshold} {unit} (z now {z:.2f}{top})",
            **evidence,
        )
    flip = FLIPS[since % len(FLIPS)]
    return Decision(
        "branch",
        f"z {z:.2f} <= {threshold} {unit}{top}: within the noise or worse; re-run with {flip} flipped",
        flip=flip,
        **evidence,
    )


def world_model_variance(path: Path) -> tuple[float, float | None]:
    """The world-model variance component of a variance study's variance.json, and its 95% interval's top (None in a
    study without one)."""
    try:
        component = read_json(Path(path))["components"]["world_model"]
        ci = component.get("ci95")
        return float(component["variance"]), None if ci is None else float(ci[1])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise LemarioError(
            f"--variance {path} is not a variance study's variance.json ({e.__class__.__name__}: {e}): run "
            "`lemario study variance` and pass its OUT/variance.json"
        ) from None
