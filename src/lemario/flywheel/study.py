"""`lemario study variance`: how much of an evaluation score's noise each seed contributes (issue 19).

W world models on one corpus (trained here with seeds 0..W-1, or given), K policies trained in imagination in each
(seeds 1..K), all W x K evaluated on the same E evaluation seeds; then the decomposition of `lemario.play.variance`
(world model, policy, eval seed, episode), intervals for each component, and the power table that says how many
world models and policies an iteration needs to see a given improvement.

    OUT/config.json            resolved config, git commit, seeds (re-running the same command resumes)
    OUT/wm/s{i}/               the world models trained here (`lemario train` runs)
    OUT/policies/w{i}-s{j}/    policy j of world model i (`lemario imagine` runs)
    OUT/eval/                  every policy on the same evaluation seeds (`lemario eval`)
    OUT/variance.json          per-policy rows, components with intervals, the power table
    OUT/variance.png           the policies' scores per world model, and each component's sd

Every step is skipped once its output exists, so a killed study resumes where it stopped.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import tyro

from lemario.control.agents import check_frames
from lemario.control.imagination import ImagineConfig, run_imagine
from lemario.core import checkpoint, plots
from lemario.core.errors import LemarioError
from lemario.core.executor import EXECUTORS, run_configs
from lemario.core.files import check_writable, write_json, writer_lock
from lemario.core.provenance import provenance
from lemario.core.runconfig import as_json, open_study, run_key
from lemario.core.runlog import read_rows
from lemario.games.mario.env import EnvConfig
from lemario.model.train import CPU_MODEL, TrainConfig, train
from lemario.model.train import PRESETS as TRAIN_PRESETS
from lemario.play.evaluate import EvalConfig, evaluate
from lemario.play.variance import (
    COMPONENTS,
    component_cis,
    decompose,
    estimate_variance,
    format_power_table,
    mean_squares,
    pooled_within_sd,
    power_table,
)

BOOKKEEPING = ("workers", "executor", "ray_address", "progress", "draws", "alpha", "power", "deltas")
"""Fields that do not change what the study measures (a resumed study may change them)."""


@dataclass(frozen=True)
class VarianceStudyConfig:
    out: Path = Path("runs/study-variance")
    """Study folder (re-running the same command resumes it)."""
    corpus: Path = Path("runs/corpus-1-1")
    """The corpus every world model and policy trains on."""
    world_models: tuple[Path, ...] = ()
    """World models to study, trained elsewhere on --corpus; empty: train --w of them here (seeds 0..W-1)."""
    w: int = 3
    """World models to train here when none are given."""
    k: int = 3
    """Policies trained in each world model (seeds 1..K)."""
    episodes: int = 30
    """Evaluation episodes per policy, on the same seeds for every policy."""
    train: TrainConfig = field(default_factory=lambda: replace(TRAIN_PRESETS["cpu"], progress=False))
    """World-model training (its corpus, out and seed are the study's)."""
    imagine: ImagineConfig = field(default_factory=lambda: ImagineConfig(updates=1200, batch=128, progress=False))
    """Policy training (its world model, corpus, out and seed are the study's)."""
    env: tyro.conf.OmitArgPrefixes[EnvConfig] = field(default_factory=lambda: CPU_MODEL.frames_env())
    """The game the policies are evaluated on (`lemario.games.mario.env.EnvConfig`), giving the world models' frames
    (the `cpu` preset's by default)."""
    workers: int = 2
    """Processes for trainings and evaluation episodes."""
    executor: str = "local"
    """'local' (process pool) or 'ray'."""
    ray_address: str = ""
    draws: int = 20000
    """Monte Carlo draws behind each component's interval (`lemario.play.variance.component_cis`)."""
    alpha: float = 0.05
    """False-commit rate of the power table's one-sided test."""
    power: float = 0.8
    """Power at which the table's smallest detectable improvement is given."""
    deltas: tuple[float, ...] = (50.0, 100.0, 200.0)
    """Improvements (mean max_x) the power table gives the power for."""
    progress: bool = True

    @property
    def n_world_models(self) -> int:
        return len(self.world_models) or self.w

    def validate(self) -> None:
        if self.n_world_models < 2 or self.k < 2 or self.episodes < 2:
            raise LemarioError(
                f"a variance study needs at least 2 world models (--w or --world-models), 2 policies each (--k) and "
                f"2 episodes; got {self.n_world_models}, {self.k}, {self.episodes}"
            )
        if self.executor not in EXECUTORS:
            raise LemarioError(f"unknown executor {self.executor!r}: use one of {', '.join(EXECUTORS)}")
        if not 0 < self.alpha < 0.5 or not 0.5 < self.power < 1:
            raise LemarioError(f"--alpha {self.alpha} must be in (0, 0.5) and --power {self.power} in (0.5, 1)")
        for path in self.world_models:
            if not Path(path).is_file():
                raise LemarioError(f"no world model at {path}: pass model.safetensors files of `lemario train` runs")
            check_frames(checkpoint.load_meta(Path(path))["config"], self.env, f"the world model {path}")
        if not self.world_models:
            check_frames(asdict(self.train.model), self.env, "the world model (--train.model)")
        if not self.corpus.is_dir():
            raise LemarioError(f"no corpus at {self.corpus}: pass the folder the world models were trained on")


PRESETS = {
    "cpu": VarianceStudyConfig(),
    "tiny": VarianceStudyConfig(
        out=Path("runs/study-tiny"),
        w=2,
        k=2,
        episodes=3,
        train=replace(TRAIN_PRESETS["tiny"], progress=False, tensorboard=False),
        imagine=ImagineConfig(updates=5, batch=8, horizon=4, hidden=16, progress=False),
        env=EnvConfig(max_steps=40),
        workers=1,
        draws=2000,
    ),
}


def _log(msg: str) -> None:
    print(f"[study] {msg}", flush=True)


def _parallel(fn, cfgs: list, cfg: VarianceStudyConfig, done: str) -> None:
    """The runs `cfgs` whose `done` file is missing (`run_configs`)."""
    todo = [c for c in cfgs if not (c.out / done).exists()]
    run_configs(fn, todo, cfg.executor, cfg.workers, cfg.ray_address)


def world_models(cfg: VarianceStudyConfig) -> list[Path]:
    """The studied world models: the given ones, or W trained here (resumed where unfinished)."""
    if cfg.world_models:
        return [Path(p) for p in cfg.world_models]
    runs = [replace(cfg.train, corpus=cfg.corpus, out=cfg.out / "wm" / f"s{i}", seed=i) for i in range(cfg.w)]
    _log(f"world models: {cfg.w} x {cfg.train.steps} steps")
    _parallel(train, runs, cfg, "model.json")
    return [r.out / "model.safetensors" for r in runs]


def policies(cfg: VarianceStudyConfig, models: list[Path]) -> list[list[Path]]:
    """[world model][policy] checkpoints, trained where missing."""
    runs = [
        [
            replace(cfg.imagine, world_model=wm, corpus=cfg.corpus, out=cfg.out / "policies" / f"w{i}-s{j}", seed=j)
            for j in range(1, cfg.k + 1)
        ]
        for i, wm in enumerate(models)
    ]
    _log(f"policies: {len(models)} world models x {cfg.k}, {cfg.imagine.updates} updates each")
    _parallel(run_imagine, [r for row in runs for r in row], cfg, "policy.json")
    return [[r.out / "policy.safetensors" for r in row] for row in runs]


def scores_of(rows: list[dict], specs: list[list[str]], episodes: int) -> np.ndarray:
    """(W, K, E) max_x of each policy's episodes, in evaluation-seed order."""
    by = {(r["agent"], r["episode"]): r["max_x"] for r in rows}
    return np.array([[[by[(s, e)] for e in range(episodes)] for s in row] for row in specs], np.float64)


def summarize(scores: np.ndarray, models: list[Path], cfg: VarianceStudyConfig) -> dict:
    """variance.json: per-policy rows, the components with intervals, the power table."""
    W, K, E = scores.shape
    comps = decompose(scores)
    cis = component_cis(scores, draws=cfg.draws)
    total = sum(getattr(comps, c) for c in COMPONENTS)
    components = {
        c: {
            "variance": getattr(comps, c),
            "sd": math.sqrt(getattr(comps, c)),
            "ci95": list(cis[c]),
            "sd_ci95": [math.sqrt(v) for v in cis[c]],
            "share": getattr(comps, c) / total if total else 0.0,
        }
        for c in COMPONENTS
    }
    policy_means = scores.mean(axis=2)  # (W, K)
    flywheel_design = estimate_variance(comps, 1, K, E)  # one world model per iteration, as the flywheel trains
    return {
        "design": {"world_models": W, "policies": K, "episodes": E},
        "rows": [
            {
                "world_model": str(models[i]),
                "w": i,
                "policy_seed": j + 1,
                "mean_max_x": float(policy_means[i, j]),
                "sd_max_x": float(scores[i, j].std(ddof=1)),
            }
            for i in range(W)
            for j in range(K)
        ],
        "world_model_means": scores.mean(axis=(1, 2)).tolist(),
        "grand_mean": float(scores.mean()),
        "components": components,
        "mean_squares": {t: {"ms": m, "df": df} for t, (m, df) in mean_squares(scores).items()},
        "between_policy_sd_within_world_model": pooled_within_sd(policy_means.tolist()),
        "flywheel_iteration_se": {
            "world_models": 1,
            "policies": K,
            "episodes": E,
            "se": math.sqrt(flywheel_design),
            "se_policy_noise_only": math.sqrt(estimate_variance(replace(comps, world_model=0.0), 1, K, E)),
        },
        "power_table": power_table(comps, episodes=E, deltas=cfg.deltas, alpha=cfg.alpha, power_=cfg.power),
        "alpha": cfg.alpha,
        "power": cfg.power,
    }


def plot(summary: dict, path: Path) -> None:
    plt = plots.figure()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for row in summary["rows"]:
        left.scatter(row["w"], row["mean_max_x"], color="tab:blue", alpha=0.7)
    for i, m in enumerate(summary["world_model_means"]):
        left.hlines(m, i - 0.25, i + 0.25, color="black")
    left.set_xticks(range(len(summary["world_model_means"])))
    left.set_xlabel("world model (training seed)")
    left.set_ylabel("policy mean max_x")
    left.set_title("policies (dots) and their world model's mean (bar)")
    comps = summary["components"]
    sds = [comps[c]["sd"] for c in COMPONENTS]
    lo = [max(0.0, s - comps[c]["sd_ci95"][0]) for s, c in zip(sds, COMPONENTS)]
    hi = [comps[c]["sd_ci95"][1] - s for s, c in zip(sds, COMPONENTS)]
    right.bar(COMPONENTS, sds, yerr=[lo, hi], capsize=4, color="tab:gray")
    right.set_ylabel("sd (max_x), 95% interval")
    right.set_title("variance components")
    plots.save_png(fig, path)


def _open_study(cfg: VarianceStudyConfig) -> None:
    config = as_json(cfg)
    if cfg.world_models:  # trained elsewhere: their own training configs, not the unused --train defaults
        config["train"] = "unused: the --world-models were trained elsewhere (world_model_runs: their configs)"
        config["world_model_runs"] = [
            {"path": str(p), **{k: m.get(k) for k in ("git_commit", "step", "train_config")}}
            for p, m in ((p, checkpoint.load_meta(Path(p))) for p in cfg.world_models)
        ]
    defaults = run_key(VarianceStudyConfig(), BOOKKEEPING)
    open_study(cfg.out, run_key(cfg, BOOKKEEPING), defaults, "variance study", config)


def study(cfg: VarianceStudyConfig) -> dict:
    """Train what is missing, evaluate, decompose; returns variance.json's content."""
    cfg.validate()
    check_writable(cfg.out)
    with writer_lock(cfg.out):
        _open_study(cfg)
        models = world_models(cfg)
        specs = [[f"policy:{p}" for p in row] for row in policies(cfg, models)]
        ecfg = EvalConfig(
            agents=tuple(s for row in specs for s in row),
            episodes=cfg.episodes,
            env=cfg.env,
            workers=cfg.workers,
            out=cfg.out / "eval",
            progress=cfg.progress,
        )
        if not (ecfg.out / "summary.json").exists():
            _log(f"evaluate {len(ecfg.agents)} policies x {cfg.episodes} episodes")
            evaluate(ecfg)
        scores = scores_of(read_rows(ecfg.out / "episodes.jsonl"), specs, cfg.episodes)
        summary = {**summarize(scores, models, cfg), "config": as_json(cfg), **provenance()}
        write_json(cfg.out / "variance.json", summary)
        plot(summary, cfg.out / "variance.png")
    return summary


def format_summary(summary: dict) -> str:
    d = summary["design"]
    lines = [f"{d['world_models']} world models x {d['policies']} policies x {d['episodes']} episodes"]
    for c, v in summary["components"].items():
        lo, hi = v["sd_ci95"]
        lines.append(
            f"  {c:<12} sd {v['sd']:>7.1f}  [{lo:.1f}, {hi:.1f}]  {v['share']:>5.1%} of one episode's variance"
        )
    fw = summary["flywheel_iteration_se"]
    lines.append(
        f"a flywheel iteration (1 world model x {fw['policies']} policies x {fw['episodes']} episodes): se "
        f"{fw['se']:.1f} (policy noise alone: {fw['se_policy_noise_only']:.1f})"
    )
    lines.append(format_power_table(summary["power_table"], summary["alpha"], summary["power"]))
    return "\n".join(lines)


def study_main(cfg: VarianceStudyConfig) -> None:
    print(format_summary(study(cfg)))
    print(f"wrote {cfg.out / 'variance.json'} and {cfg.out / 'variance.png'}")
