"""What a flywheel iteration leaves: its summary.json (`IterationSummary`) and decision.json (`decision_json`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lemario.flywheel.config import policy_label
from lemario.flywheel.detector import Decision, IterationScore, rank_key
from lemario.flywheel.plan import Past, Plan
from lemario.play.variance import pooled_within_sd


@dataclass(frozen=True)
class IterationSummary:
    """summary.json: what an iteration did and measured (`to_json` / `from_json`)."""

    iteration: int
    plan: Plan
    seed_scores: dict[str, dict]
    """Policy seed -> its evaluation aggregate (`lemario.play.stats.aggregate`)."""
    k_mean: float
    """Mean over the K seeds of each seed's mean max_x."""
    k_sd: float
    """Standard deviation between the K seeds' means."""
    best_seed: int
    confirm: dict | None
    """The best seed's aggregate on fresh seeds (None without a confirmation)."""
    decision: Decision
    hof_entry: str
    world_model: dict
    """{"val": held-out metrics, "steps": optimizer steps}"""
    probes: dict
    """Label -> {"linear": scores, "mlp": scores}"""
    audit: dict
    """{"corpus": audit table, "selection": audit table, "caps": bool}"""
    timing: dict[str, float]
    """Seconds per step."""
    corpus_episodes: int
    corpus_frames: int
    best_corpus_x: int
    best_world_model: int = 0
    """Which of the iteration's world models the best policy was trained in."""
    exploration: dict | None = None
    """The exploration archive after this iteration (`Iteration.explore`); None without --explore-steps."""
    level_scores: dict[str, dict[str, dict]] | None = None
    """With --levels: level -> policy label -> its evaluation aggregate on that level."""
    model_error: dict | None = None
    """The warm-start world model's progress report on the iteration's collected episodes (`Iteration.model_error`)."""

    @property
    def score(self) -> dict:
        """The aggregate the hall of fame ranks this iteration by: the confirmation, else the best seed's."""
        return self.confirm or self.seed_scores[policy_label(self.best_world_model, self.best_seed)]

    @property
    def rank(self) -> tuple[float, ...]:
        """Its place in the hall of fame (`rank_key` of `score` by its detector's metric): larger is better."""
        return rank_key(self.decision.metric, self.score)

    @property
    def env_steps(self) -> int:
        """Env steps of the run's corpus after this iteration: every step collected or explored (an episode's first
        frame is its reset, no step); evaluation episodes are not counted."""
        return self.corpus_frames - self.corpus_episodes

    @property
    def eval_steps(self) -> int:
        """Env steps this iteration's own evaluations played: its K policies' episodes and its confirmation's, the
        play its pick of K and its decision rest on (`env_steps` leaves them out, as issue 20's accounting does)."""
        scores = [*self.seed_scores.values(), *([self.confirm] if self.confirm else [])]
        return round(sum(s["mean_steps"] * s["episodes"] for s in scores))

    @property
    def flags(self) -> tuple[int, int]:
        """(episodes that took the flag, episodes) over the K policies' evaluations."""
        scores = self.seed_scores.values()
        return round(sum(s["flag_rate"] * s["episodes"] for s in scores)), sum(s["episodes"] for s in scores)

    @property
    def past(self) -> Past:
        return Past(self.decision.verdict, self.decision.flip, self.plan.flip)

    @property
    def as_score(self) -> IterationScore:
        return score_of(self.iteration, self.seed_scores, self.plan, self.decision.verdict)

    def to_json(self) -> dict:
        d = {f: getattr(self, f) for f in self.__dataclass_fields__}
        means = {seed: s["mean_max_x"] for seed, s in self.seed_scores.items()}
        return {
            **d,
            "plan": self.plan.to_json(),
            "decision": decision_json(self.iteration, self.decision, self.plan, means),
        }

    @classmethod
    def from_json(cls, d: dict) -> IterationSummary:
        fields = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        return cls(**{**fields, "plan": Plan.from_json(d["plan"]), "decision": Decision.from_json(d["decision"])})


def emulated_steps(summaries: list[IterationSummary]) -> list[int]:
    """After each iteration, every env step the run has emulated: its corpus (`env_steps`) and all the evaluation
    play of that iteration and the ones before it (`eval_steps`). What a run that picks its policies by playing the
    game spends; its corpus alone is what the world model and the policies learned from."""
    played = np.cumsum([s.eval_steps for s in summaries], dtype=np.int64)
    return [s.env_steps + int(p) for s, p in zip(summaries, played)]


def hof_curve(summaries: list[IterationSummary]) -> list[dict]:
    """The hall of fame's best after each iteration (by its detector's metric: `IterationSummary.rank`) with its
    confirmation's mean max_x as "score" (the curve that must rise) and flag rate."""
    best, out = None, []
    for s in summaries:
        best = s if best is None or s.rank > best.rank else best
        c = best.score
        out.append(
            {
                "after": s.iteration,
                "iteration": best.iteration,
                "score": c["mean_max_x"],
                "flag_rate": c["flag_rate"],
                "ci95": [c["ci95_low"], c["ci95_high"]],
                "max_max_x": c["max_max_x"],
            }
        )
    return out


def score_of(n: int, per_seed: dict[str, dict], plan: Plan, verdict: str = "") -> IterationScore:
    """Iteration n as the detector sees it, from its policies' evaluations (policy label -> aggregate): each
    metric's mean over the policies and its sd between them, pooled within world models (labels 'SEED' for the first
    world model's, 'wW-SEED' for world model W's)."""
    groups: dict[str, list[dict]] = {}
    for label, s in per_seed.items():
        groups.setdefault(label.rpartition("-")[0], []).append(s)

    def mean_sd(key: str) -> tuple[float, float]:
        values = [[s[key] for s in g] for g in groups.values()]
        return float(np.mean([v for g in values for v in g])), pooled_within_sd(values)

    (mean, sd), (flag_rate, flag_sd) = mean_sd("mean_max_x"), mean_sd("flag_rate")
    episodes = min(s["episodes"] for s in per_seed.values())
    k, w = len(plan.policy_seeds), plan.world_models
    return IterationScore(n, mean, sd, k, verdict, w, flag_rate, flag_sd, episodes)


def decision_json(n: int, decision: Decision, plan: Plan, seed_means: dict[str, float]) -> dict:
    """decision.json: the detector's decision with the iteration, the flip it ran with and the seeds' means."""
    return {"iteration": n, **decision.to_json(), "applied_flip": plan.flip, "seed_means": seed_means}
