"""The flywheel's config, its presets, and the per-iteration configs it derives for each step.

The world-model and policy trainings take their own configs (`--train.*`, `--imagine.*`), less the fields the
flywheel sets itself for each iteration (where the corpus and the outputs are, the warm start, the seeds): those
are hidden from the command line, so no flag is accepted and then silently overwritten.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import tyro

from lemario.control.agents import check_frames
from lemario.control.imagination import ImagineConfig
from lemario.core import checkpoint
from lemario.core.errors import LemarioError
from lemario.core.executor import EXECUTORS
from lemario.data.replay import ReplayConfig
from lemario.flywheel import hof
from lemario.flywheel.detector import DetectorConfig
from lemario.games.mario.env import EnvConfig
from lemario.games.mario.levels import TRAIN_LEVELS
from lemario.model.train import CPU_MODEL, TrainConfig
from lemario.model.train import PRESETS as TRAIN_PRESETS
from lemario.play.collect import CollectConfig, level_seed
from lemario.play.explore import ExploreConfig

BOOKKEEPING = ("out", "iterations", "workers", "executor", "ray_address", "continue_after_halt", "progress")
"""FlywheelConfig fields that do not change what a run does: a resume may change them."""
COLLECTOR = "collector"
"""The explorer's policy spec for the iteration's collecting policy."""
ON_POLICY_BY = ("best", "last")
"""Who plays a later iteration's on-policy episodes (`FlywheelConfig.on_policy_by`)."""
CONFIRM_SEED_OFFSET = 500_000  # confirmation episodes: EVAL_SEED_BASE + this + i, disjoint from the eval seeds


@dataclass(frozen=True)
class IterationTrainConfig(TrainConfig):
    """`TrainConfig` with the fields each iteration sets hidden from the command line (the flywheel's own --progress
    shows or hides every phase's progress)."""

    corpus: tyro.conf.Suppress[Path] = TrainConfig.corpus
    out: tyro.conf.Suppress[Path] = TrainConfig.out
    episodes: tyro.conf.Suppress[Path | None] = None
    init_from: tyro.conf.Suppress[Path | None] = None
    seed: tyro.conf.Suppress[int] = 0
    progress: tyro.conf.Suppress[bool] = True


@dataclass(frozen=True)
class IterationImagineConfig(ImagineConfig):
    """`ImagineConfig` with the fields each policy's training gets from the flywheel hidden from the command line."""

    world_model: tyro.conf.Suppress[Path] = ImagineConfig.world_model
    corpus: tyro.conf.Suppress[Path] = ImagineConfig.corpus
    out: tyro.conf.Suppress[Path] = ImagineConfig.out
    episodes: tyro.conf.Suppress[Path | None] = None
    init_from: tyro.conf.Suppress[Path | None] = None
    snapshot_every: tyro.conf.Suppress[int] = 0
    seed: tyro.conf.Suppress[int] = 0
    threads: tyro.conf.Suppress[int] = 0
    progress: tyro.conf.Suppress[bool] = True
    progress_row: tyro.conf.Suppress[int] = 0


@dataclass(frozen=True)
class IterationExploreConfig(ExploreConfig):
    """`ExploreConfig` with the fields the flywheel sets hidden from the command line: its folder
    (RUN/corpus/explore), its env-step total (iterations x --explore-steps), seed, game, workers and executor."""

    out: tyro.conf.Suppress[Path] = ExploreConfig.out
    env_steps: tyro.conf.Suppress[int] = ExploreConfig.env_steps
    seed: tyro.conf.Suppress[int] = 0
    env: tyro.conf.Suppress[EnvConfig] = field(default_factory=EnvConfig)
    workers: tyro.conf.Suppress[int] = 1
    executor: tyro.conf.Suppress[str] = "local"
    ray_address: tyro.conf.Suppress[str] = ""
    progress: tyro.conf.Suppress[bool] = True


def _as(cls, cfg):
    """The same config values in the flywheel's variant of its class."""
    return cls(**{f.name: getattr(cfg, f.name) for f in fields(cfg)})


@dataclass(frozen=True)
class FlywheelConfig:
    out: Path = Path("runs/flywheel-1-1")
    """Run folder (re-running the same command resumes it)."""
    iterations: int = 5
    """Iterations to have finished when the command returns (raise it to extend a run)."""
    k: int = 3
    """Policies trained per world model (seeds iter*1000 + 1..K); K >= 2 measures the between-seed noise."""
    world_models: int = 1
    """World models trained per iteration (in parallel: processes, or Ray tasks on workers and GPUs), each with
    its K policies: the iteration's mean then averages W world models' training noise (`lemario study variance`
    measures it)."""
    env: tyro.conf.OmitArgPrefixes[EnvConfig] = field(default_factory=lambda: CPU_MODEL.frames_env())
    """The game collection and evaluation play (`lemario.games.mario.env.EnvConfig`): --level, --max-steps, ...; its
    frames are the world model's (112 px for the default model: `--resize` follows `--train.model.image-size`)."""
    levels: tuple[str, ...] = ()
    """Play each of these levels instead of --level, with one world model and one set of policies for all: each
    level's collection into RUN/corpus/<level>/ (the episode counts below are per level), its exploration into
    RUN/corpus/explore-<level>/, the replay selection level by level, world-model windows and imagination starts
    balanced across levels, and every evaluation on every level (ITER/eval/<level>/; an iteration's score pools
    them: the mean of the level means)."""
    start_from: Path | None = None
    """Another flywheel's folder (its hall of fame's best) or one hall-of-fame entry (RUN/hof/NAME) to start from:
    the first iteration collects --episodes with its policy and warm-starts from its world model (issue 21's
    fine-tuning on a level; without it the run trains from scratch). The model options must be its."""
    base_corpus: Path | None = None
    """Another corpus whose own episode files the run trains on from its first iteration, hard-linked into
    RUN/corpus/base/ when the run starts (issue 20: a fine-tuning run that keeps seeing the whole level, not only
    its policy's play)."""
    fork_from: Path | None = None
    """Start a new run folder as iterations 1..--fork-after of this flywheel run (hard links: its iterations, the
    corpus they collected, their hall-of-fame entries), then go on with this config: an A/B of a change from one
    iteration on against the source's own next ones (`lemario.flywheel.fork`; config.json lists what differs)."""
    fork_after: int = 0
    """The source's finished iterations a fork starts with."""
    bootstrap_episodes: int = 1000
    """Biased-random episodes collected in iteration 1 (no policy exists yet), per level."""
    episodes: int = 100
    """Episodes collected per later iteration with the best policy, per level."""
    explore: float = 0.1
    """Per-step probability of a biased-random macro overriding the collecting policy (0.1 hands ~40% of the steps
    to the macros, 0.4 ~80%)."""
    on_policy: float = 0.5
    """Share of a later iteration's collected episodes played by the best policy with no exploration (issue 20: with
    every episode explored, the collections averaged 746-1029 max_x, no flag); the others explore with --explore."""
    on_policy_by: str = "best"
    """Who plays those: 'best' (the hall of fame's best) or 'last' (the previous iteration's policies in turn, every
    world model's: the states where the policies being replaced fail, which the best need not reach)."""
    explore_at_ends: int = 0
    """Explore only before the N places where the iteration's on-policy episodes ended most often, one window per
    explored episode in turn (`lemario collect --explore-at-ends`; 0: everywhere)."""
    explore_steps: int = 0
    """Env steps of frontier exploration (`lemario explore`) per iteration, after the collection, into
    RUN/corpus/explore: one archive growing over the iterations, whose episodes the world model and the policies
    train on beside the collected ones (0: none)."""
    explorer: IterationExploreConfig = field(default_factory=IterationExploreConfig)
    """The exploration's cells, choice and exploring agent (`lemario.play.explore`); `--explorer.policy collector`
    explores with the iteration's collecting policy (biased play in the first, then the hall of fame's best)."""
    workers: int = 2
    """Collection and evaluation processes; also the parallel policy trainings of the local executor."""
    executor: str = "local"
    """'local' (process pool) or 'ray' (collection workers and policy trainings as Ray tasks)."""
    ray_address: str = ""
    """Ray cluster to join ('auto' or HOST:PORT); empty: a private local instance on 127.0.0.1."""
    warm_start: bool = True
    """Initialize each world model from the hall of fame's best."""
    policy_warm_start: bool = False
    """Start the K policies from the hall of fame's best policy (`lemario imagine --init-from`), not fresh."""
    eval_episodes: int = 30
    """Evaluation episodes per policy (the same seeds every iteration)."""
    confirm_episodes: int = 30
    """Episodes of the best policy's re-evaluation on fresh seeds (0: none)."""
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    """The improvement detector after each iteration: its rule, metric, threshold, patience and world-model noise
    (`lemario.flywheel.detector`)."""
    continue_after_halt: bool = False
    """Go on past a halt decision (the operator's call)."""
    probe_frames: int = 20000
    """Frames embedded by each iteration's probes."""
    probe_mlp_steps: int = 300
    """Optimizer steps of each MLP probe."""
    progress_steps: int = 20000
    """Collected steps (at random; 0: all) the warm-start model's progress error is measured on (decides nothing)."""
    seed: int = 0
    """Base seed: collection seeds and the world model's seed derive from it."""
    train: IterationTrainConfig = field(
        default_factory=lambda: _as(
            IterationTrainConfig,
            replace(TRAIN_PRESETS["cpu"], steps=2500, stop_at=0, minutes=25.0, clock="cpu", progress=False),
        )
    )
    """World-model training per iteration (its corpus, out, episodes, init_from and seed are the flywheel's)."""
    imagine: IterationImagineConfig = field(
        default_factory=lambda: IterationImagineConfig(updates=1200, batch=128, progress=False)
    )
    """Policy training per seed (its world_model, corpus, out, episodes, seed and threads are the flywheel's)."""
    replay: tyro.conf.Suppress[ReplayConfig] = field(default_factory=ReplayConfig)
    """Stratified replay (tiers and caps: `lemario.data.tiers.TIERS`)."""
    replay_capacity: int = 5000
    """Trajectories kept by the replay selection (the elite tier is never evicted)."""
    progress: bool = True
    """Show progress bars."""

    def validate(self) -> None:
        if self.k < 2:
            raise LemarioError(
                f"--k {self.k}: the detector needs at least 2 policies per iteration to measure the noise"
            )
        if self.executor not in EXECUTORS:
            raise LemarioError(f"unknown executor {self.executor!r}: use one of {', '.join(EXECUTORS)}")
        if self.world_models < 1:
            raise LemarioError(f"--world-models {self.world_models}: an iteration trains at least one")
        if self.iterations < 1 or self.bootstrap_episodes < 1 or self.episodes < 1 or self.eval_episodes < 2:
            raise LemarioError(
                "--iterations, --bootstrap-episodes and --episodes must be >= 1 and --eval-episodes >= 2"
            )
        self.detector.validate()
        if self.on_policy_by not in ON_POLICY_BY:
            raise LemarioError(f"--on-policy-by {self.on_policy_by!r}: use one of {', '.join(ON_POLICY_BY)}")
        # a later iteration's collection, with --explore-at-ends as given (the bootstrap's plays without it)
        replace(
            self.collect_config("biased", self.explore, 1, 2, self.on_policy), explore_at_ends=self.explore_at_ends
        ).validate()
        if self.explore_steps < 0:
            raise LemarioError(f"--explore-steps {self.explore_steps}: give 0 (no exploration) or more")
        if self.explore_steps:
            for ecfg in self.explore_configs(1, "biased"):
                ecfg.validate()
        self.imagine.validate()
        check_frames(asdict(self.train.model), self.env, "the world model (--train.model)")
        self.env.validate_levels(self.levels)
        if (self.fork_from is None) != (self.fork_after < 1) or (self.fork_from and self.start_from):
            raise LemarioError(
                "a fork takes --fork-from RUN and --fork-after N >= 1 together, without --start-from: pass both"
            )
        if self.base_corpus is not None and (self.levels or not any(Path(self.base_corpus).glob("*.h5"))):
            raise LemarioError(
                f"--base-corpus {self.base_corpus}: give a folder of episodes of the run's level (not with --levels)"
            )
        if self.start_from is not None:
            theirs = checkpoint.load_meta(start_entry(self.start_from) / "world_model.safetensors", "world_model")
            ours = asdict(self.train.model)
            differ = sorted(k for k, v in theirs["config"].items() if k in ours and ours[k] != v)
            if differ:
                raise LemarioError(
                    f"--start-from {self.start_from}: its world model differs in {', '.join(differ)}: pass its "
                    f"options (--train.model.{differ[0].replace('_', '-')} ...)"
                )

    def collect_config(
        self, policy: str, explore: float, episodes: int, iteration: int, on_policy: float, agents: tuple[str, ...] = ()
    ) -> CollectConfig:
        """Iteration `iteration`'s collection run into RUN/corpus (`agents`: its on-policy agents, if not `policy`)."""
        return CollectConfig(
            out=self.out / "corpus",
            episodes=episodes,
            workers=self.workers,
            policy=policy,
            explore=explore,
            explore_at_ends=self.explore_at_ends if explore and on_policy else 0,
            on_policy=on_policy,
            on_policy_agents=agents,
            run=f"iter{iteration:03d}",
            seed=self.seed,
            env=self.env,
            levels=self.levels,
            progress=self.progress,
            executor=self.executor,
            ray_address=self.ray_address,
        )

    def explore_configs(self, iteration: int, collect_policy: str) -> list[ExploreConfig]:
        """The exploration run into RUN/corpus/explore (with --levels, one per level into RUN/corpus/explore-<level>,
        seeded from the seed and the level), extended to `iteration` x explore_steps env steps; the iteration's
        `collect_policy` explores where the explorer's policy is 'collector'."""
        explorer = _as(ExploreConfig, self.explorer)
        one = replace(
            explorer,
            policy=collect_policy if explorer.policy == COLLECTOR else explorer.policy,
            out=self.out / "corpus" / "explore",
            env_steps=iteration * self.explore_steps,
            seed=self.seed,
            env=self.env,
            workers=self.workers,
            executor=self.executor,
            ray_address=self.ray_address,
            progress=self.progress,
        )
        if not self.levels:
            return [one]
        return [
            replace(
                one,
                out=self.out / "corpus" / f"explore-{lv}",
                env=replace(self.env, level=lv),
                seed=level_seed(self.seed, lv),
            )
            for lv in self.levels
        ]


PRESETS = {
    "tiny": FlywheelConfig(
        out=Path("runs/flywheel-tiny"),
        iterations=2,
        k=2,
        env=EnvConfig(max_steps=60),
        bootstrap_episodes=6,
        episodes=3,
        on_policy_by="last",
        explore_steps=40,
        explorer=IterationExploreConfig(explore_steps=10, batch=2, cell="ram", policy=COLLECTOR),
        workers=1,
        eval_episodes=3,
        confirm_episodes=2,
        probe_frames=2000,
        probe_mlp_steps=20,
        train=_as(IterationTrainConfig, replace(TRAIN_PRESETS["tiny"], progress=False, tensorboard=False)),
        imagine=IterationImagineConfig(updates=10, batch=16, horizon=5, hidden=32, progress=False),
        progress=False,
    ),
    "cpu": FlywheelConfig(),
    "cpu-explore": FlywheelConfig(  # issue 20's arm beside the pure `cpu` one: the same loop plus exploration
        out=Path("runs/flywheel-1-1-explore"),
        explore_steps=10_000,  # about what the RAM-cell archive took to reach the flag (docs/RESULTS.md, session 11)
        explorer=IterationExploreConfig(cell="ram"),
    ),
    "cpu-levels": FlywheelConfig(  # issue 21: one world model and K policies for the training levels
        out=Path("runs/flywheel-levels"),
        levels=TRAIN_LEVELS,
        bootstrap_episodes=200,  # per level: 1,200 in all, about the single-level bootstrap's frames
        episodes=20,
        eval_episodes=10,  # per level: each policy's score pools 60 episodes
        confirm_episodes=10,
        train=_as(
            IterationTrainConfig,
            replace(
                TRAIN_PRESETS["cpu"],
                model=replace(CPU_MODEL, level_embedding=True),
                steps=2500,
                stop_at=0,
                minutes=25.0,
                clock="cpu",
                progress=False,
            ),
        ),
    ),
    "gpu": FlywheelConfig(
        env=TRAIN_PRESETS["gpu"].model.frames_env(),
        k=8,
        bootstrap_episodes=5000,
        episodes=1000,
        workers=16,
        eval_episodes=30,
        train=_as(IterationTrainConfig, replace(TRAIN_PRESETS["gpu"], steps=20000, progress=False)),
        imagine=IterationImagineConfig(updates=5000, batch=1024, progress=False),
    ),
}


def iter_dir(run: Path, n: int) -> Path:
    """RUN/iterNNN, the folder of iteration n."""
    return Path(run) / f"iter{n:03d}"


def policy_label(w: int, seed: int) -> str:
    """A policy's name in an iteration's scores: its seed, prefixed by its world model after the first."""
    return str(seed) if w == 0 else f"w{w}-{seed}"


def policy_dir(iteration_dir: Path, w: int, seed: int) -> Path:
    """ITER/policies/sSEED (world model 0) or ITER/policies/wW-sSEED: policy `seed` of world model w."""
    return iteration_dir / "policies" / (f"s{seed}" if w == 0 else f"w{w}-s{seed}")


def start_entry(path: Path) -> Path:
    """The hall-of-fame entry `--start-from` names: the entry itself, or a flywheel folder's best."""
    path = Path(path)
    if (path / "policy.safetensors").exists() and (path / "world_model.safetensors").exists():
        return path
    best = hof.top(path) if (path / "hof").is_dir() else []
    if not best:
        raise LemarioError(
            f"--start-from {path}: neither a hall-of-fame entry (policy.safetensors and world_model.safetensors) nor "
            "a flywheel folder with one: pass RUN or RUN/hof/NAME of a run that finished an iteration"
        )
    return hof.folder(path, best[0])
