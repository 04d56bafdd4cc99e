"""`lemario flywheel`: lemario's main job. Each iteration (the seed's Flywheel v2, M1-M4):

    collect   episodes with the hall of fame's best policy plus biased-random exploration (iteration 1, with no
              policy yet: the biased-random baseline) into RUN/corpus
    select    the bounded, stratified replay selection of the corpus (`lemario.replay`), audit table saved
    train     the world model on the selection, warm-started from the hall of fame's best world model
    probe     linear/MLP probes of the new world model to RAM physics (`lemario.probes`)
    imagine   K actor-critic policies in the world model, seeds iter*1000 + 1..K, in parallel
    evaluate  the K policies on the harness (N stochastic episodes each, the same seeds every iteration)
    confirm   the best of the K re-evaluated on seeds nothing was selected on (its eval mean is the max of K)
    decide    the improvement detector (commit / branch / halt) on the K-seed scores; the hall of fame gets the
              iteration's world model, policy and evaluations

Every step's output is written atomically and is the step's "done" marker, so a run killed at any moment
resumes, with the same command, from the last completed step: collection runs are named per iteration (their
episodes are seeded and resumed, never repeated), training resumes from its checkpoint, and policies,
evaluations and hall-of-fame entries are skipped once they exist. The plan of an iteration (which policy
collects, what is warm-started, which variable a branch flips) is derived from the finished iterations
only, and saved. One process writes a run folder at a time.

A `branch` decision re-runs the next iteration with one variable flipped (`lemario.detector.FLIPS`); a flip
that then commits is kept, one that does not is reverted. `halt` stops the run until an operator passes
`--continue-after-halt`.

    RUN/config.json               resolved config, git commit, seeds
    RUN/state.json                finished iterations and their decisions (derived; for people and the report)
    RUN/corpus/                   every episode ever collected (HDF5, `lemario.corpus`)
    RUN/iterNNN/plan.json         the iteration's settings;  selection.json, audit.json;  wm/ (a `lemario train` run)
    RUN/iterNNN/probe.json  policies/s{seed}/  eval/  confirm/  decision.json  summary.json
    RUN/hof/                      the hall of fame (`lemario.hof`)
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import tyro

from lemario.control.imagination import ImagineConfig, run_imagine
from lemario.core.errors import LemarioError
from lemario.core.executor import EXECUTORS, run_parallel
from lemario.core.files import atomic_write_text, check_writable, writer_lock
from lemario.core.provenance import provenance
from lemario.core.runconfig import as_json, check_same_run, run_key
from lemario.data.corpus import scan
from lemario.data.replay import ReplayConfig, Tier, audit, select
from lemario.flywheel import hof
from lemario.flywheel.detector import IterationScore, decide
from lemario.model.probes import ProbeConfig, run_probes
from lemario.model.train import PRESETS as TRAIN_PRESETS
from lemario.model.train import TrainConfig, train
from lemario.play.collect import CollectConfig, collect
from lemario.play.evaluate import EvalConfig, evaluate

BOOKKEEPING = ("out", "iterations", "workers", "executor", "ray_address", "continue_after_halt", "progress")
"""FlywheelConfig fields that do not change what a run does: a resume may change them."""
CONFIRM_SEED_OFFSET = 500_000  # confirmation episodes: EVAL_SEED_BASE + this + i, disjoint from the eval seeds


@dataclass(frozen=True)
class FlywheelConfig:
    out: Path = Path("runs/flywheel-1-1")
    """Run folder (re-running the same command resumes it)."""
    iterations: int = 5
    """Iterations to have finished when the command returns (raise it to extend a run)."""
    k: int = 3
    """Policies trained per iteration (seeds iter*1000 + 1..K); K >= 2 measures the between-seed noise."""
    level: str = "1-1"
    backend: str = "retro"
    action_set: str = "complex"
    max_steps: int = 1500
    bootstrap_episodes: int = 1000
    """Biased-random episodes collected in iteration 1 (no policy exists yet)."""
    episodes: int = 100
    """Episodes collected per later iteration with the best policy."""
    explore: float = 0.1
    """Per-step probability of a biased-random macro overriding the collecting policy."""
    workers: int = 2
    """Collection and evaluation processes; also the parallel policy trainings of the local executor."""
    executor: str = "local"
    """'local' (process pool) or 'ray' (collection workers and policy trainings as Ray tasks)."""
    ray_address: str = ""
    """Ray cluster to join ('auto' or HOST:PORT); empty: a private local instance on 127.0.0.1."""
    warm_start: bool = True
    """Initialize each world model from the hall of fame's best."""
    eval_episodes: int = 30
    confirm_episodes: int = 30
    threshold: float = 1.0
    """Commit when the K-seed mean beats the best by more than this many pooled between-seed sds."""
    patience: int = 3
    """Halt after this many iterations without a commit."""
    continue_after_halt: bool = False
    """Go on past a halt decision (the operator's call)."""
    probe_frames: int = 20000
    probe_mlp_steps: int = 300
    seed: int = 0
    train: TrainConfig = field(
        default_factory=lambda: replace(TRAIN_PRESETS["cpu"], steps=2500, minutes=25.0, progress=False)
    )
    """World-model training per iteration (corpus, out, episodes, init_from and seed are set by the flywheel)."""
    imagine: ImagineConfig = field(default_factory=lambda: ImagineConfig(updates=600, batch=128, progress=False))
    """Policy training per seed (world_model, corpus, out, episodes and seed are set by the flywheel)."""
    replay: tyro.conf.Suppress[ReplayConfig] = field(default_factory=ReplayConfig)
    """Stratified replay (tiers and caps: `lemario.replay.DEFAULT_TIERS`)."""
    replay_capacity: int = 5000
    """Trajectories kept by the replay selection (the elite tier is never evicted)."""
    progress: bool = True

    def validate(self) -> None:
        if self.k < 2:
            raise LemarioError(
                f"--k {self.k}: the detector needs at least 2 policies per iteration to measure the noise"
            )
        if self.executor not in EXECUTORS:
            raise LemarioError(f"unknown executor {self.executor!r}: use one of {', '.join(EXECUTORS)}")
        if self.iterations < 1 or self.bootstrap_episodes < 1 or self.episodes < 1 or self.eval_episodes < 2:
            raise LemarioError(
                "--iterations, --bootstrap-episodes and --episodes must be >= 1 and --eval-episodes >= 2"
            )
        self.collect_config("biased", 0.0, 1, 1).validate()

    def collect_config(self, policy: str, explore: float, episodes: int, iteration: int) -> CollectConfig:
        return CollectConfig(
            out=self.out / "corpus",
            episodes=episodes,
            workers=self.workers,
            policy=policy,
            explore=explore,
            run=f"iter{iteration:03d}",
            seed=self.seed,
            level=self.level,
            backend=self.backend,
            action_set=self.action_set,
            max_steps=self.max_steps,
            progress=self.progress,
            executor=self.executor,
            ray_address=self.ray_address,
        )


PRESETS = {
    "tiny": FlywheelConfig(
        out=Path("runs/flywheel-tiny"),
        iterations=2,
        k=2,
        max_steps=60,
        bootstrap_episodes=6,
        episodes=3,
        workers=1,
        eval_episodes=3,
        confirm_episodes=2,
        probe_frames=2000,
        probe_mlp_steps=20,
        train=replace(TRAIN_PRESETS["tiny"], progress=False, tensorboard=False),
        imagine=ImagineConfig(updates=10, batch=16, horizon=5, hidden=32, progress=False),
        progress=False,
    ),
    "cpu": FlywheelConfig(),
    "gpu": FlywheelConfig(
        k=8,
        bootstrap_episodes=5000,
        episodes=1000,
        workers=16,
        eval_episodes=30,
        train=replace(TRAIN_PRESETS["gpu"], steps=20000, progress=False),
        imagine=ImagineConfig(updates=5000, batch=1024, progress=False),
    ),
}


def iter_dir(run: Path, n: int) -> Path:
    return Path(run) / f"iter{n:03d}"


def _read(path: Path) -> dict:
    return json.loads(path.read_text())


def _write(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(obj, indent=2, default=str))


# ---- the plan of an iteration -----------------------------------------------------------------------------------
BASE = {"explore": None, "entropy_scale": 1.0, "warm_start": None, "replay_caps": True}


def apply_flip(settings: dict, flip: str) -> dict:
    """One variable of the iteration flipped (the detector's branch)."""
    s = dict(settings)
    if flip == "exploration":
        s["explore"] = min(1.0, 2 * s["explore"]) if s["explore"] > 0 else 0.1
    elif flip == "entropy":
        s["entropy_scale"] = 3 * s["entropy_scale"]
    elif flip == "warm_start":
        s["warm_start"] = not s["warm_start"]
    elif flip == "replay_caps":
        s["replay_caps"] = not s["replay_caps"]
    else:
        raise ValueError(f"unknown flip {flip!r}")
    return s


def plan_iteration(cfg: FlywheelConfig, n: int, decisions: list[dict]) -> dict:
    """The settings of iteration n, from the config and the decisions of iterations 1..n-1 only."""
    base = {**BASE, "explore": cfg.explore, "warm_start": cfg.warm_start}
    flip = None
    for d in decisions:  # replay the history: a flip that committed is kept, one that did not is reverted
        if d["decision"] == "commit" and d.get("applied_flip"):
            base = apply_flip(base, d["applied_flip"])
        flip = d.get("flip") if d["decision"] != "commit" else None
    settings = apply_flip(base, flip) if flip else base
    best = hof.top(cfg.out)
    entry = hof.folder(cfg.out, best[0]) if best else None
    return {
        "iteration": n,
        "flip": flip,
        "settings": settings,
        "base": base,
        "collect_policy": f"policy:{entry / 'policy.safetensors'}" if entry else "biased",
        "collect_explore": settings["explore"] if entry else 0.0,
        "collect_episodes": cfg.episodes if entry else cfg.bootstrap_episodes,
        "init_from": str(entry / "world_model.safetensors") if entry and settings["warm_start"] else None,
        "hof_best": best[0]["name"] if best else None,
        "policy_seeds": [n * 1000 + i for i in range(1, cfg.k + 1)],
        "train_seed": cfg.seed * 1000 + n,
    }


def replay_config(cfg: FlywheelConfig, caps: bool) -> ReplayConfig:
    tiers = cfg.replay.tiers if caps else tuple(Tier(t.name, t.lo, t.hi, None, t.protected) for t in cfg.replay.tiers)
    return ReplayConfig(capacity=cfg.replay_capacity, tiers=tiers)


# ---- one iteration ----------------------------------------------------------------------------------------------
def _log(n: int, msg: str) -> None:
    print(f"[iter {n}] {msg}", flush=True)


def run_iteration(cfg: FlywheelConfig, n: int, decisions: list[dict]) -> dict:
    d = iter_dir(cfg.out, n)
    d.mkdir(parents=True, exist_ok=True)
    plan = _read(d / "plan.json") if (d / "plan.json").exists() else plan_iteration(cfg, n, decisions)
    _write(d / "plan.json", plan)
    s = plan["settings"]
    timing = _read(d / "timing.json") if (d / "timing.json").exists() else {}

    def step(name: str, fn):
        t0 = time.time()
        out = fn()
        if name not in timing:
            timing[name] = round(time.time() - t0, 1)
            _write(d / "timing.json", timing)
        return out

    # collect
    col = cfg.collect_config(plan["collect_policy"], plan["collect_explore"], plan["collect_episodes"], n)
    _log(n, f"collect {col.episodes} episodes: {col.policy} (explore {col.explore})")
    step("collect", lambda: collect(col))

    # select
    rows = scan(cfg.out / "corpus").episodes
    rcfg = replay_config(cfg, s["replay_caps"])
    chosen = select(rows, rcfg)
    table = audit(chosen, rcfg.tiers)
    _write(d / "selection.json", [r["file"] for r in chosen])
    _write(d / "audit.json", {"corpus": audit(rows, rcfg.tiers), "selection": table, "caps": s["replay_caps"]})
    _log(
        n,
        f"replay selection: {len(chosen)}/{len(rows)} episodes; "
        + ", ".join(f"{t['tier']} {t['share']:.0%}" for t in table),
    )

    # train
    tcfg = replace(
        cfg.train,
        corpus=cfg.out / "corpus",
        out=d / "wm",
        episodes=d / "selection.json",
        init_from=Path(plan["init_from"]) if plan["init_from"] else None,
        seed=plan["train_seed"],
    )
    wm = d / "wm" / "model.safetensors"
    if not wm.with_suffix(".json").exists():
        _log(
            n,
            f"train the world model ({tcfg.steps} steps"
            + (f", {tcfg.minutes:g} min cap" if tcfg.minutes else "")
            + (f", warm start {plan['hof_best']}" if plan["init_from"] else ", from scratch")
            + ")",
        )
        step("train", lambda: train(tcfg))
    val = _read(wm.with_suffix(".json"))["metrics"]

    # probe
    if not (d / "probe.json").exists():
        step(
            "probe",
            lambda: run_probes(
                ProbeConfig(
                    wm,
                    corpus=cfg.out / "corpus",
                    max_frames=cfg.probe_frames,
                    mlp_steps=cfg.probe_mlp_steps,
                    out=d / "probe.json",
                )
            ),
        )
    probe = _read(d / "probe.json")

    # imagine K policies
    icfgs = [
        replace(
            cfg.imagine,
            world_model=wm,
            corpus=cfg.out / "corpus",
            episodes=d / "selection.json",
            out=d / "policies" / f"s{seed}",
            seed=seed,
            entropy=cfg.imagine.entropy * s["entropy_scale"],
        )
        for seed in plan["policy_seeds"]
    ]
    todo = [c for c in icfgs if not (c.out / "policy.json").exists()]
    if todo:
        procs = min(len(todo), max(1, cfg.workers)) if cfg.executor == "local" else len(todo)
        threads = max(1, (os.cpu_count() or 1) // procs)
        _log(n, f"train {len(todo)} policies in imagination ({cfg.executor}, {procs} at a time)")
        step(
            "imagine",
            lambda: run_parallel(
                run_imagine,
                [replace(c, threads=threads) for c in todo],
                cfg.executor,
                processes=procs,
                cpus=threads,
                ray_address=cfg.ray_address,
            ),
        )
    policies = [c.out / "policy.safetensors" for c in icfgs]
    specs = tuple(f"policy:{p}" for p in policies)

    # evaluate, then confirm the best on fresh seeds
    env = dict(
        level=cfg.level, backend=cfg.backend, action_set=cfg.action_set, max_steps=cfg.max_steps, workers=cfg.workers
    )
    if not (d / "eval" / "summary.json").exists():
        _log(n, f"evaluate {len(specs)} policies x {cfg.eval_episodes} episodes")
        step("eval", lambda: evaluate(EvalConfig(agents=specs, episodes=cfg.eval_episodes, out=d / "eval", **env)))
    ev = _read(d / "eval" / "summary.json")
    per_seed = {seed: ev["per_agent"][spec] for seed, spec in zip(plan["policy_seeds"], specs)}
    best_seed = max(per_seed, key=lambda k: per_seed[k]["mean_max_x"])
    best_spec = specs[plan["policy_seeds"].index(best_seed)]
    if cfg.confirm_episodes and not (d / "confirm" / "summary.json").exists():
        _log(n, f"confirm seed {best_seed} on {cfg.confirm_episodes} fresh episodes")
        step(
            "confirm",
            lambda: evaluate(
                EvalConfig(
                    agents=(best_spec,),
                    episodes=cfg.confirm_episodes,
                    out=d / "confirm",
                    seed_offset=CONFIRM_SEED_OFFSET,
                    **env,
                )
            ),
        )
    confirm = _read(d / "confirm" / "summary.json")["per_agent"][best_spec] if cfg.confirm_episodes else None

    # decide, then the hall of fame
    means = [per_seed[k]["mean_max_x"] for k in plan["policy_seeds"]]
    mean = sum(means) / len(means)
    sd = math.sqrt(sum((m - mean) ** 2 for m in means) / (len(means) - 1))
    if (d / "decision.json").exists():
        decision = _read(d / "decision.json")
    else:
        history = [IterationScore(h["iteration"], h["mean"], h["sd"], h["k"], h["decision"]) for h in decisions]
        dec = decide(history, IterationScore(n, mean, sd, len(means)), cfg.threshold, cfg.patience)
        decision = {
            "iteration": n,
            **dec.as_dict(),
            "applied_flip": plan["flip"],
            "seed_means": dict(zip(map(str, plan["policy_seeds"]), means)),
        }
        _write(d / "decision.json", decision)
    _log(
        n,
        f"K={len(means)} seeds: mean max_x {mean:.0f} +- {sd:.0f} (sd between seeds) -> "
        f"{decision['decision'].upper()}: "
        f"{decision['reason']}",
    )
    entry = next((e for e in hof.catalog(cfg.out) if e["iteration"] == n), None)
    if entry is None:
        entry = hof.add(
            cfg.out,
            n,
            wm,
            policies[plan["policy_seeds"].index(best_seed)],
            d / "eval",
            {
                "best_agent": best_spec,
                "best_seed": best_seed,
                "k_mean": mean,
                "k_sd": sd,
                "decision": decision["decision"],
            },
            d / "confirm" if confirm else None,
        )

    summary = {
        "iteration": n,
        "plan": plan,
        "seed_scores": {str(k): v for k, v in per_seed.items()},
        "k_mean": mean,
        "k_sd": sd,
        "best_seed": best_seed,
        "confirm": confirm,
        "decision": decision,
        "hof_entry": entry["name"],
        "world_model": {"val": val, "steps": _read(wm.with_suffix(".json")).get("step")},
        "probes": {k: {"linear": v["linear"], "mlp": v["mlp"]} for k, v in probe["probes"].items()},
        "audit": _read(d / "audit.json"),
        "timing": timing,
        "corpus_episodes": len(rows),
        "corpus_frames": sum(r["n_steps"] + 1 for r in rows),
        "best_corpus_x": max(r["max_x"] for r in rows),
    }
    _write(d / "summary.json", summary)
    return summary


# ---- the run ----------------------------------------------------------------------------------------------------
def finished(run: Path) -> list[dict]:
    """Summaries of the finished iterations of a run folder, in order."""
    out, n = [], 1
    while (iter_dir(run, n) / "summary.json").exists():
        out.append(_read(iter_dir(run, n) / "summary.json"))
        n += 1
    return out


def _history(summaries: list[dict]) -> list[dict]:
    return [
        {
            "iteration": s["iteration"],
            "mean": s["k_mean"],
            "sd": s["k_sd"],
            "k": len(s["seed_scores"]),
            "decision": s["decision"]["decision"],
            "flip": s["decision"].get("flip"),
            "applied_flip": s["decision"].get("applied_flip"),
        }
        for s in summaries
    ]


def write_state(cfg: FlywheelConfig, summaries: list[dict], status: str) -> None:
    best = hof.top(cfg.out)
    _write(
        cfg.out / "state.json",
        {
            "status": status,
            "iterations_done": len(summaries),
            "hof_best": best[0] if best else None,
            "iterations": [
                {
                    "iteration": s["iteration"],
                    "k_mean": s["k_mean"],
                    "k_sd": s["k_sd"],
                    "seed_means": {k: v["mean_max_x"] for k, v in s["seed_scores"].items()},
                    "confirm_mean": s["confirm"]["mean_max_x"] if s["confirm"] else None,
                    "decision": s["decision"]["decision"],
                    "reason": s["decision"]["reason"],
                    "seconds": sum(s["timing"].values()),
                }
                for s in summaries
            ],
        },
    )


def flywheel(cfg: FlywheelConfig) -> list[dict]:
    cfg.validate()
    check_writable(cfg.out)
    with writer_lock(cfg.out):
        key = run_key(cfg, BOOKKEEPING)
        if (cfg.out / "config.json").exists():
            defaults = run_key(FlywheelConfig(), BOOKKEEPING)
            check_same_run(_read(cfg.out / "config.json")["run_key"], key, defaults, cfg.out, "flywheel run")
        else:
            _write(
                cfg.out / "config.json",
                {
                    "run_key": key,
                    "config": as_json(cfg),
                    "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    **provenance(),
                },
            )
        summaries = finished(cfg.out)
        if summaries:
            print(f"resuming {cfg.out}: {len(summaries)} iterations finished")
        while len(summaries) < cfg.iterations:
            last = summaries[-1]["decision"] if summaries else None
            if last and last["decision"] == "halt" and not cfg.continue_after_halt:
                print(
                    f"halted after iteration {last['iteration']}: {last['reason']}; pass --continue-after-halt to go on"
                )
                write_state(cfg, summaries, "halted")
                return summaries
            summaries.append(run_iteration(cfg, len(summaries) + 1, _history(summaries)))
            write_state(cfg, summaries, "running")
        write_state(cfg, summaries, "done")
    return summaries


def format_table(summaries: list[dict]) -> str:
    lines = [
        f"{'iter':>4}  {'K-seed mean':>11}  {'sd':>5}  {'seeds (mean max_x)':<28}{'confirm':>8}  {'HOF best':>8}  "
        "decision"
    ]
    best = -math.inf
    for s in summaries:
        seeds = " ".join(f"{v['mean_max_x']:.0f}" for v in s["seed_scores"].values())
        c = s["confirm"]["mean_max_x"] if s["confirm"] else s["seed_scores"][str(s["best_seed"])]["mean_max_x"]
        best = max(best, c)
        lines.append(
            f"{s['iteration']:>4}  {s['k_mean']:>11.0f}  {s['k_sd']:>5.0f}  {seeds:<28}{c:>8.0f}  {best:>8.0f}  "
            f"{s['decision']['decision']}"
        )
    return "\n".join(lines)


def flywheel_main(cfg: FlywheelConfig) -> None:
    summaries = flywheel(cfg)
    print(format_table(summaries))
    print(f"hall of fame: `lemario hof list {cfg.out}`; report: `lemario report {cfg.out}`")
