"""The plan of a flywheel iteration: what collects, what is warm-started, which seeds, which variable a branch
flips. It is derived from the config and the decisions of the finished iterations only, and saved as plan.json
(`Plan.to_json` / `Plan.from_json`), so a resumed iteration runs exactly the plan it started with.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from lemario.data.replay import ReplayConfig
from lemario.flywheel import hof
from lemario.flywheel.config import FlywheelConfig, iter_dir, policy_dir, start_entry
from lemario.play.collect import CollectConfig

WORLD_MODEL_SEED_STRIDE = 1_000_000
"""World model w of an iteration trains with seed train_seed + w x this (apart from every first world model's)."""


@dataclass(frozen=True)
class Settings:
    """The variables a branch may flip (`lemario.flywheel.detector.FLIPS`)."""

    explore: float
    """Exploration of the collecting policy."""
    warm_start: bool
    """World model initialized from the hall of fame's best."""
    entropy_scale: float = 1.0
    """Multiplier of the policies' entropy bonus."""
    replay_caps: bool = True
    """Whether the replay selection caps its tiers' shares."""

    def flipped(self, flip: str) -> Settings:
        """These settings with one variable flipped (the detector's branch)."""
        if flip == "exploration":
            return replace(self, explore=min(1.0, 2 * self.explore) if self.explore > 0 else 0.1)
        if flip == "entropy":
            return replace(self, entropy_scale=3 * self.entropy_scale)
        if flip == "warm_start":
            return replace(self, warm_start=not self.warm_start)
        if flip == "replay_caps":
            return replace(self, replay_caps=not self.replay_caps)
        raise ValueError(f"unknown flip {flip!r}")


@dataclass(frozen=True)
class Past:
    """What planning needs of a finished iteration: its decision, the flip it proposed and the one it ran with."""

    verdict: str
    """commit | branch | halt"""
    flip: str | None = None
    applied_flip: str | None = None


@dataclass(frozen=True)
class Plan:
    iteration: int
    flip: str | None
    """The variable flipped in this iteration (a branch of the previous one), or None."""
    settings: Settings
    """The settings this iteration runs with."""
    base: Settings
    """The settings before this iteration's flip (committed flips included)."""
    collect_policy: str
    """Agent spec that collects: the hall of fame's best policy, or 'biased' before there is one."""
    collect_explore: float
    collect_episodes: int
    init_from: str | None
    """World-model checkpoint to warm-start from, or None."""
    hof_best: str | None
    """Name of the hall of fame's best entry when the iteration was planned."""
    policy_seeds: tuple[int, ...]
    """Seeds of the K policies trained in each world model."""
    train_seed: int
    """Seed of the first world model; world model w trains with `train_seeds[w]`."""
    world_models: int = 1
    """World models trained (plans from before issue 19 had one)."""
    collect_on_policy: float = 0.0
    """Share of the collected episodes played with no exploration (plans from before session 32 explored all)."""
    collect_on_policy_agents: tuple[str, ...] = ()
    """Agent specs that play those in turn (--on-policy-by last: the previous iteration's policies); empty: the
    collecting policy."""
    policy_init: str | None = None
    """Policy checkpoint the K policies start from (--policy-warm-start: the hall of fame's best), or None: fresh."""

    @property
    def train_seeds(self) -> tuple[int, ...]:
        return tuple(self.train_seed + WORLD_MODEL_SEED_STRIDE * w for w in range(self.world_models))

    def collection(self, cfg: FlywheelConfig) -> CollectConfig:
        """The iteration's collection run into RUN/corpus."""
        return cfg.collect_config(
            self.collect_policy,
            self.collect_explore,
            self.collect_episodes,
            self.iteration,
            self.collect_on_policy,
            self.collect_on_policy_agents,
        )

    def to_json(self) -> dict:
        return {
            **asdict(self),
            "policy_seeds": list(self.policy_seeds),
            "collect_on_policy_agents": list(self.collect_on_policy_agents),
        }

    @classmethod
    def from_json(cls, d: dict) -> Plan:
        return cls(
            **{
                **d,
                "settings": Settings(**d["settings"]),
                "base": Settings(**d["base"]),
                "policy_seeds": tuple(d["policy_seeds"]),
                "collect_on_policy_agents": tuple(d.get("collect_on_policy_agents", ())),
            }
        )


def plan_iteration(cfg: FlywheelConfig, n: int, history: list[Past]) -> Plan:
    """The plan of iteration n, from the config, the hall of fame and iterations 1..n-1 only."""
    base, flip = Settings(explore=cfg.explore, warm_start=cfg.warm_start), None
    for past in history:  # replay the history: a flip that committed is kept, one that did not is reverted
        if past.verdict == "commit" and past.applied_flip:
            base = base.flipped(past.applied_flip)
        flip = past.flip if past.verdict != "commit" else None
    settings = base.flipped(flip) if flip else base
    best = hof.top(cfg.out)
    entry = hof.folder(cfg.out, best[0]) if best else None
    if entry is None and cfg.start_from is not None:  # fine-tuning: another run's best until this one has its own
        entry = start_entry(cfg.start_from)
    return Plan(
        iteration=n,
        flip=flip,
        settings=settings,
        base=base,
        collect_policy=f"policy:{entry / 'policy.safetensors'}" if entry else "biased",
        collect_explore=settings.explore if entry else 0.0,
        collect_episodes=cfg.episodes if entry else cfg.bootstrap_episodes,
        init_from=str(entry / "world_model.safetensors") if entry and settings.warm_start else None,
        hof_best=best[0]["name"] if best else None,
        policy_seeds=policy_seeds(cfg, n),
        train_seed=cfg.seed * 1000 + n,
        world_models=cfg.world_models,
        collect_on_policy=cfg.on_policy if entry else 0.0,
        collect_on_policy_agents=previous_policies(cfg, n) if entry and cfg.on_policy_by == "last" else (),
        policy_init=str(entry / "policy.safetensors") if entry and cfg.policy_warm_start else None,
    )


def policy_seeds(cfg: FlywheelConfig, n: int) -> tuple[int, ...]:
    """The seeds of iteration n's K policies in each world model: n x 1000 + 1..K."""
    return tuple(n * 1000 + i for i in range(1, cfg.k + 1))


def previous_policies(cfg: FlywheelConfig, n: int) -> tuple[str, ...]:
    """The agent specs of iteration n-1's policies, world model by world model in seed order (none before
    iteration 2: a fine-tuning run's first iteration has only the entry it starts from)."""
    if n < 2:
        return ()
    prev = iter_dir(cfg.out, n - 1)
    seeds = policy_seeds(cfg, n - 1)
    return tuple(
        f"policy:{policy_dir(prev, w, s) / 'policy.safetensors'}" for w in range(cfg.world_models) for s in seeds
    )


def replay_config(cfg: FlywheelConfig, caps: bool) -> ReplayConfig:
    """The replay selection's config, with or without its tiers' share caps."""
    tiers = cfg.replay.tiers if caps else tuple(replace(t, max_frame_share=None) for t in cfg.replay.tiers)
    return ReplayConfig(capacity=cfg.replay_capacity, tiers=tiers)
