"""The flywheel's improvement detector (the seed's M4): commit, branch or halt after each iteration.

An iteration is K policies trained with different seeds in each of its W world models (W = 1 unless asked), each
evaluated on the harness; its score is the mean of the policies' means. Against the best committed iteration:

    rule 'welch' (the default since session 53)
        se = sqrt(world_model_var / W + sd^2 / (W K))     the iteration mean's standard error, with sd the
                                                          between-policy sd (within world models) and
                                                          world_model_var measured by `lemario study variance`
        t  = (mean - best_mean) / sqrt(se^2 + best_se^2)
        z  = the standard normal quantile of t's one-sided p-value on the Welch-Satterthwaite degrees of freedom
             (each policy spread estimated on W (K - 1) df, a study's component taken as known), so that
             threshold 1.645 is 5% false commits whatever K: with K = 3 the sds rest on 2 df each, and reading t as
             z commits ~9% of the time on no change (benchmarks/detector_rates.py)
    rule 'components' (issue 19 to session 52)
        z  = t                                            threshold 1.645: 5% false commits only for many policies
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

What the rule decides on (`metric`, issue 20): 'max_x' (the policies' mean max_x, as above), 'flags' (their flag rates,
by the same standard errors: policy noise only, no study measures a world-model component of flags) or 'either'
(the default): a commit when either test passes, the false-commit rate that `threshold` gives one test split between
the two (Bonferroni: 1.645 becomes 1.960 for each), each against the best committed iteration by its own metric. A
flag rule alone halts a run before its policies reach the flag (no flags to gain on while they learn the level's
start); a max_x rule alone halted session 51's run at the iteration with the most flags. A flag rate's sd between
K policies is floored at the binomial sd of its episodes (the iteration's rate, with one flag and one failure added:
3 policies that each flag 0 of 30 are not noiseless). Every decision states both tests' z.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from statistics import NormalDist

from lemario.core.errors import LemarioError
from lemario.core.files import read_json
from lemario.play.stats import t_as_z

# What a branch flips, in turn (the flywheel knows how to apply each).
FLIPS = ("exploration", "entropy", "warm_start", "replay_caps")


RULES = ("welch", "components", "seeds")
METRICS = ("max_x", "flags", "either")


@dataclass(frozen=True)
class DetectorConfig:
    """How the flywheel decides after each iteration (`lemario flywheel --detector.*`)."""

    rule: str = "welch"
    """'welch': the gain over the best in standard errors of the difference (the world models' training noise
    included when --detector.variance names a study), as the normal z of its t-test's p-value on Welch's degrees of
    freedom; 'components': that t read as z (sessions 19-52); 'seeds': in pooled between-seed sds (before issue
    19; max_x only)."""
    metric: str = "either"
    """What a commit rests on: 'max_x' (the policies' mean max_x), 'flags' (their flag rates) or 'either' (a gain in
    one or the other, the false-commit rate split between the two tests)."""
    threshold: float = 1.645
    """Commit when the gain's z exceeds this (1.645: 5% false commits, one-sided; with --detector.metric either, the
    same 5% split between the two tests; rule seeds: this many pooled sds)."""
    variance: Path | None = None
    """A variance study's variance.json (`lemario study variance`) whose world-model component the rules 'welch' and
    'components' add to max_x's noise; none: the policy seeds' noise alone, which every decision then says."""
    world_model_sd: float | None = None
    """The world-model component's sd (mean max_x) as a study measured it, for when its variance.json is not at hand:
    the residual `cpu` preset's 0, 95% interval [0, 387] (docs/RESULTS.md, session 21, `runs/study-res`; the plain
    preset's was 341). Instead of --detector.variance (which also gives the interval's top to every decision)."""
    patience: int = 3
    """Halt after this many iterations without a commit."""

    def validate(self) -> None:
        if self.rule not in RULES:
            raise LemarioError(f"unknown detector rule {self.rule!r}: use one of {', '.join(RULES)}")
        if self.metric not in METRICS:
            raise LemarioError(f"unknown detector metric {self.metric!r}: use one of {', '.join(METRICS)}")
        if self.rule == "seeds" and self.metric != "max_x":
            raise LemarioError(
                f"--detector.rule seeds decides on max_x alone: pass --detector.metric max_x, or --detector.rule "
                f"components to decide on {self.metric}"
            )
        if self.variance is not None and self.world_model_sd is not None:
            raise LemarioError(
                "--detector.variance and --detector.world-model-sd both give the world-model component: pass one"
            )
        if self.world_model_sd is not None and not self.world_model_sd >= 0:
            raise LemarioError(f"--detector.world-model-sd {self.world_model_sd}: give the study's sd, >= 0")
        self.world_model_var()

    def world_model_var(self) -> float | None:
        """The world-model variance component of max_x's noise (None: not measured)."""
        if self.world_model_sd is not None:
            return self.world_model_sd**2
        return None if self.variance is None else world_model_variance(self.variance)[0]

    def world_model_var_high(self) -> float | None:
        """The top of that component's 95% interval, where the study gives one (None: --world-model-sd, or none)."""
        return None if self.variance is None else world_model_variance(self.variance)[1]

    def test_threshold(self) -> float:
        """Each test's threshold: `threshold`, or with metric 'either' the one that halves its false-commit rate."""
        if self.metric != "either":
            return self.threshold
        normal = NormalDist()
        return normal.inv_cdf(1 - (1 - normal.cdf(self.threshold)) / 2)


@dataclass(frozen=True)
class IterationScore:
    """An iteration as the detector sees it."""

    iteration: int
    mean: float  # mean over the policies of each policy's mean max_x
    sd: float  # sd between the policies' means (within world models)
    k: int  # policies per world model
    verdict: str = ""  # its decision (commit | branch | halt), empty for the one being decided
    world_models: int = 1
    flag_rate: float = 0.0  # mean over the policies of each policy's flag rate
    flag_sd: float = 0.0  # sd between the policies' flag rates (within world models)
    episodes: int = 0  # evaluation episodes per policy (0: unknown, no binomial floor)

    def terms(self, world_model_var: float) -> list[tuple[float, float]]:
        """The variance of `mean` in parts, (variance, degrees of freedom; inf: known): the world models' training
        noise (a study's) and the policies' spread (whose means carry their episodes' noise too)."""
        w = self.world_models
        return [(world_model_var / w, math.inf), (self.sd**2 / (w * self.k), w * (self.k - 1))]

    def se(self, world_model_var: float) -> float:
        """Standard error of `mean`."""
        return math.sqrt(sum(v for v, _ in self.terms(world_model_var)))

    def flag_terms(self) -> list[tuple[float, float]]:
        """The variance of `flag_rate` as `terms`: the policies' spread, at least the binomial spread of their
        episodes (the iteration's rate with one flag and one failure added, so no flags in 90 episodes is not
        certainty; where that floor decides, the variance is the binomial model's, not an estimate)."""
        n = self.world_models * self.k
        floor = 0.0
        if self.episodes:
            p = (self.flag_rate * n * self.episodes + 1) / (n * self.episodes + 2)
            floor = math.sqrt(p * (1 - p) / self.episodes)
        df = math.inf if floor >= self.flag_sd else self.world_models * (self.k - 1)
        return [(max(self.flag_sd, floor) ** 2 / n, df)]

    def flag_se(self) -> float:
        """Standard error of `flag_rate`."""
        return math.sqrt(self.flag_terms()[0][0])


@dataclass(frozen=True)
class FlagTest:
    """A decision's test on the policies' flag rates, against the best committed iteration by flags."""

    rate: float
    se: float
    z: float
    best_iteration: int | None = None
    best_rate: float | None = None
    best_se: float | None = None
    t: float | None = None
    df: float | None = None


@dataclass(frozen=True)
class Decision:
    """A verdict (commit | branch | halt) and its evidence; JSON keeps the verdict under "decision"."""

    verdict: str
    reason: str
    z: float
    """max_x's z (the gain over the best committed iteration by mean max_x: rule welch its t as a z, rule components
    its t, rule seeds in `pooled_sd`)."""
    threshold: float
    """Each test's threshold (`DetectorConfig.test_threshold`)."""
    pooled_sd: float
    """What the gain is divided by: the standard error of the difference (rules welch, components) or the pooled
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
    metric: str = "max_x"  # decisions stored before the flag test decided on max_x alone
    flags: FlagTest | None = None
    """The flag rates' test (decided on with metric 'flags' or 'either', evidence with 'max_x'); None before it."""
    t: float | None = None
    """max_x's gain in standard errors (rules welch, components)."""
    df: float | None = None
    """Its Welch-Satterthwaite degrees of freedom (inf: every variance part known)."""

    def to_json(self) -> dict:
        """The decision as stored in decision.json (the verdict under "decision")."""
        d = asdict(self)
        return {"decision": d.pop("verdict"), **d}

    @classmethod
    def from_json(cls, d: dict) -> Decision:
        """From to_json's form; other keys (a decision.json's iteration, applied flip, seed means) are ignored."""
        names = {f.name for f in fields(cls)} - {"verdict", "flags"}
        flags = FlagTest(**d["flags"]) if d.get("flags") else None
        return cls(verdict=d["decision"], flags=flags, **{k: v for k, v in d.items() if k in names})


def rank_key(metric: str, agg: dict) -> tuple[float, ...]:
    """What "best" means under a detector metric, for an evaluation aggregate (`lemario.play.stats.aggregate`): its
    mean max_x with metric 'max_x'; with 'flags' or 'either' its flag rate, then its mean max_x among equal rates (the
    flag is what those runs are after; equal rates, 0 of 30 above all, are the common case before the first flags).
    The hall of fame ranks by it, the iteration's best policy of K is picked by it, the next iteration warm-starts
    from its best."""
    return (agg["mean_max_x"],) if metric == "max_x" else (agg["flag_rate"], agg["mean_max_x"])


def pooled_sd(a: IterationScore, b: IterationScore) -> float:
    """The sd that a difference of two iterations' means is measured against: the root mean square of their sds."""
    return math.sqrt((a.sd**2 + b.sd**2) / 2)


def welch_df(terms: list[tuple[float, float]]) -> float:
    """The Welch-Satterthwaite degrees of freedom of a sum of variance parts (variance, df): (sum v)^2 / sum v^2 / df,
    parts known (df inf) adding to the sum alone; inf when every part is known."""
    estimated = sum(v * v / df for v, df in terms if math.isfinite(df))
    return sum(v for v, _ in terms) ** 2 / estimated if estimated > 0 else math.inf


def ratio(diff: float, sd: float) -> float:
    """A gain in units of its noise; noiseless seeds: any gain is real, none is none."""
    return diff / sd if sd > 0 else (math.copysign(math.inf, diff) if diff else 0.0)


def gain_test(diff: float, terms: list[tuple[float, float]], welch: bool) -> tuple[float, float, float, float]:
    """(z, t, df, se) of a gain `diff` over noise in parts `terms` (both iterations'): t = diff / se; z is t as a
    normal z at Welch's df when `welch`, t itself otherwise."""
    se = math.sqrt(sum(v for v, _ in terms))
    t, df = ratio(diff, se), welch_df(terms)
    return (t_as_z(t, df) if welch else t), t, df, se


def flag_test(current: IterationScore, committed: list[IterationScore], welch: bool) -> FlagTest:
    """The flag rates' test of `current` against the best committed iteration by flags (z infinite without one)."""
    if not committed:
        return FlagTest(current.flag_rate, current.flag_se(), math.inf)
    best = max(committed, key=lambda h: h.flag_rate)
    z, t, df, _ = gain_test(current.flag_rate - best.flag_rate, current.flag_terms() + best.flag_terms(), welch)
    return FlagTest(current.flag_rate, current.flag_se(), z, best.iteration, best.flag_rate, best.flag_se(), t, df)


def since_commit(history: list[IterationScore]) -> int:
    """Iterations since the last commit."""
    since = 0
    for h in reversed(history):
        if h.verdict == "commit":
            break
        since += 1
    return since


def decide(history: list[IterationScore], current: IterationScore, cfg: DetectorConfig = DetectorConfig()) -> Decision:
    """Commit, branch or halt for `current` against the best committed iterations of `history` (see the module)."""
    cfg.validate()
    if current.k < 2 or not math.isfinite(current.sd):
        raise ValueError(
            f"iteration {current.iteration}: the detector needs K >= 2 seeds to measure the noise, got K = {current.k}"
        )
    seeds, welch, threshold = cfg.rule == "seeds", cfg.rule == "welch", cfg.test_threshold()
    wm_var = cfg.world_model_var()
    evidence = dict(threshold=threshold, mean=current.mean, sd=current.sd, k=current.k, rule=cfg.rule)
    evidence.update(world_models=current.world_models, metric=cfg.metric)
    if not seeds:
        evidence.update(se=current.se(wm_var or 0.0), world_model_var=wm_var)
        evidence.update(world_model_var_high=cfg.world_model_var_high())
    committed = [h for h in history if h.verdict == "commit"]
    evidence.update(flags=flag_test(current, committed, welch))
    if not committed:
        first = current.sd if seeds else evidence["se"]
        return Decision(
            "commit", "first iteration", math.inf, pooled_sd=first, best_iteration=None, best_mean=None, **evidence
        )
    best = max(committed, key=lambda h: h.mean)
    diff = current.mean - best.mean
    evidence.update(best_iteration=best.iteration, best_mean=best.mean)
    if seeds:
        evidence.update(z=ratio(diff, pooled_sd(current, best)), pooled_sd=pooled_sd(current, best))
        unit = "pooled sd"
    else:
        z, t, df, se = gain_test(diff, current.terms(wm_var or 0.0) + best.terms(wm_var or 0.0), welch)
        evidence.update(z=z, t=t, df=df, pooled_sd=se, best_se=best.se(wm_var or 0.0))
        unit = "standard errors" + (f", as z at {df:.1f} df" if welch else "")
        unit += " (policy noise only: no world-model variance measured)" if wm_var is None else ""
        high = evidence["world_model_var_high"]
        if high is not None:
            evidence.update(z_high=gain_test(diff, current.terms(high) + best.terms(high), welch)[0])
            unit += f"; {evidence['z_high']:.2f} at the world-model component's 95% top (sd {math.sqrt(high):.0f})"
    verdict, reason, flip = verdict_of(history, Decision("", "", **evidence), cfg, unit)
    return Decision(verdict, reason, flip=flip, **evidence)


def verdict_of(
    history: list[IterationScore], d: Decision, cfg: DetectorConfig, unit: str
) -> tuple[str, str, str | None]:
    """The verdict on a decision's evidence `d`, its reason and a branch's flip (`unit`: max_x's, in words)."""
    flags, threshold = d.flags, d.threshold
    alpha = 1 - NormalDist().cdf(cfg.threshold)
    split = f" each ({alpha:.1%} false commits split between the two tests)" if cfg.metric == "either" else ""
    as_z = f", as z at {flags.df:.1f} df" if d.rule == "welch" and flags.df is not None else ""
    zs = f"z {d.z:.2f} on max_x ({unit}), {flags.z:.2f} on flags (standard errors{as_z}, policy noise only)"
    gains = []
    if cfg.metric != "flags" and d.z > threshold:
        gains.append(f"mean {d.mean:.0f} beats the best ({d.best_mean:.0f}, iter {d.best_iteration}) by {d.z:.2f}")
    if cfg.metric != "max_x" and flags.z > threshold:
        gains.append(
            f"the flag rate {flags.rate:.3f} beats the best ({flags.best_rate:.3f}, iter {flags.best_iteration}) by "
            f"{flags.z:.2f}"
        )
    if gains:
        return "commit", f"{' and '.join(gains)} > {threshold:.4g}{split}: {zs}", None
    on = {"max_x": "on max_x", "flags": "on flags", "either": "on either"}[cfg.metric]
    since = since_commit(history)
    if since + 1 >= cfg.patience:
        return "halt", f"{since + 1} iterations without an improvement beyond {threshold:.4g}{split} {on} ({zs})", None
    flip = FLIPS[since % len(FLIPS)]
    return "branch", f"{zs} <= {threshold:.4g}{split} {on}: within the noise or worse; re-run with {flip} flipped", flip


def replay(scores: list[IterationScore], cfg: DetectorConfig) -> list[Decision]:
    """What `cfg` decides of a run's iterations in turn, each against the verdicts it gave the ones before (the
    run's own verdicts set aside): a detector tried on a finished run's results. Past its first verdict that differs
    from the run's own the run would have gone on otherwise (another flip, or a halt), so later decisions are what it
    says of the same results, not what the run would have done."""
    decisions: list[Decision] = []
    history: list[IterationScore] = []
    for score in scores:
        decisions.append(decide(history, replace(score, verdict=""), cfg))
        history.append(replace(score, verdict=decisions[-1].verdict))
    return decisions


def world_model_variance(path: Path) -> tuple[float, float | None]:
    """The world-model variance component of a variance study's variance.json, and its 95% interval's top (None in a
    study without one)."""
    try:
        component = read_json(Path(path))["components"]["world_model"]
        ci = component.get("ci95")
        return float(component["variance"]), None if ci is None else float(ci[1])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise LemarioError(
            f"--detector.variance {path} is not a variance study's variance.json ({e.__class__.__name__}: {e}): run "
            "`lemario study variance` and pass its OUT/variance.json"
        ) from None
