"""One flywheel iteration, step by step (`run_iteration`); what it leaves is `lemario.flywheel.summary`.

Every step's output is its "done" marker (the collection run's episodes, the exploration's archive, wm/model.json,
probe.json, each policy's policy.json, eval/ and confirm/ summaries, decision.json, the hall-of-fame entry,
summary.json), so a killed iteration resumes at the first step whose output is missing, with the plan it started
with.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

from lemario.control.imagination import run_imagine
from lemario.core.executor import run_configs
from lemario.core.files import read_json, write_json
from lemario.data.corpus import scan, warn_unreadable
from lemario.data.replay import select
from lemario.data.tiers import audit, frames
from lemario.flywheel import hof
from lemario.flywheel.config import CONFIRM_SEED_OFFSET, FlywheelConfig, iter_dir, policy_dir, policy_label
from lemario.flywheel.detector import Decision, decide, rank_key
from lemario.flywheel.plan import Plan, plan_iteration, replay_config
from lemario.flywheel.summary import IterationSummary, decision_json, score_of
from lemario.model.probes import ProbeConfig, run_probes
from lemario.model.progress import episodes_progress, summary_line
from lemario.model.train import train
from lemario.play.collect import collect
from lemario.play.evaluate import EvalConfig, evaluate, evaluate_levels
from lemario.play.explore import explore
from lemario.play.stats import kseed_summary


class Iteration:
    """Iteration n of a run: its folder, plan, step timer and steps."""

    def __init__(self, cfg: FlywheelConfig, n: int, history: list[IterationSummary]):
        self.cfg, self.n, self.history = cfg, n, history
        self.dir = iter_dir(cfg.out, n)
        self.dir.mkdir(parents=True, exist_ok=True)
        plan_path, timing_path = self.dir / "plan.json", self.dir / "timing.json"
        past = [s.past for s in history]
        self.plan = Plan.from_json(read_json(plan_path)) if plan_path.exists() else plan_iteration(cfg, n, past)
        write_json(plan_path, self.plan.to_json())
        self.timing = read_json(timing_path) if timing_path.exists() else {}
        self.wms = [
            self.dir / ("wm" if w == 0 else f"wm{w}") / "model.safetensors" for w in range(self.plan.world_models)
        ]
        self.wm = self.wms[0]
        self.corpus = cfg.out / "corpus"

    def log(self, msg: str) -> None:
        print(f"[iter {self.n}] {msg}", flush=True)

    def timed(self, name: str, fn):
        """Run a step, recording its seconds the first time it completes."""
        t0 = time.time()
        out = fn()
        if name not in self.timing:
            self.timing[name] = round(time.time() - t0, 1)
            write_json(self.dir / "timing.json", self.timing)
        return out

    def collect(self) -> list[dict]:
        """This iteration's collection run; returns its episodes' index rows."""
        col = self.plan.collection(self.cfg)
        by = f" by {len(col.on_policy_agents)} policies of iteration {self.n - 1}" if col.on_policy_agents else ""
        at = f" before their {col.explore_at_ends} commonest ends" if col.explore_at_ends else ""
        self.log(
            f"collect {col.episodes} episodes: {col.policy} (explore {col.explore}{at}, on-policy {col.on_policy}{by})"
        )
        rows = [r for r in self.timed("collect", lambda: collect(col)).episodes if r["run"] == col.run]
        for name, explored in (("without exploration", False), ("explored", True)):  # iteration 1: biased play
            if group := [r for r in rows if bool(r.get("explore")) == explored]:
                mean, flags = sum(r["max_x"] for r in group) / len(group), sum(r["flag_get"] for r in group)
                capped = sum(r["n_steps"] >= col.env.max_steps for r in group)
                self.log(
                    f"collected {name}: {len(group)} episodes, mean max_x {mean:.0f}, {flags} flags, {capped} capped"
                )
        return rows

    def model_error(self, rows: list[dict]) -> dict | None:
        """The warm-start world model's progress error (`lemario.model.progress`) on the episodes just collected:
        states the previous policy reached, which that model never trained on (progress.json; None without a warm
        start)."""
        path = self.dir / "progress.json"
        if not path.exists() and self.plan.init_from and rows:
            files = [r["file"] for r in rows]
            steps = self.cfg.progress_steps
            report = self.timed(
                "progress", lambda: episodes_progress(Path(self.plan.init_from), self.corpus, files, steps)
            )
            write_json(path, {"world_model": self.plan.init_from, "episodes": len(rows), "report": report})
            if report:
                self.log(f"the warm-start model on them: {summary_line(report)}")
        return read_json(path)["report"] if path.exists() else None

    def explore(self) -> dict | None:
        """Extend the frontier exploration (RUN/corpus/explore, or one per level) to this iteration's env-step total;
        returns the archive's figures (with --levels: their env steps and each level's figures; None without
        --explore-steps)."""
        if not self.cfg.explore_steps:
            return None
        figures = {}
        for ecfg in self.cfg.explore_configs(self.n, self.plan.collect_policy):
            level = f" on {ecfg.env.level}" if self.cfg.levels else ""
            self.log(f"explore{level} to {ecfg.env_steps} env steps ({ecfg.cell} cells, {ecfg.policy})")
            archive = self.timed(f"explore {ecfg.env.level}" if level else "explore", lambda c=ecfg: explore(c))
            figures[ecfg.env.level] = {
                "env_steps": archive.env_steps,
                "restores": archive.restores,
                "cells": len(archive.cells),
                "max_x": archive.max_x,
                "flag_env_steps": archive.flag_env_steps,
            }
        if not self.cfg.levels:
            return next(iter(figures.values()))
        return {"env_steps": sum(f["env_steps"] for f in figures.values()), "levels": figures}

    def select(self) -> list[dict]:
        """The replay selection (selection.json) and its audit (audit.json); returns the corpus's index rows."""
        index = scan(self.corpus)
        warn_unreadable(self.corpus, index)  # the selection leaves them out
        rows = index.episodes
        caps = self.plan.settings.replay_caps
        rcfg = replay_config(self.cfg, caps)
        chosen = select(rows, rcfg)
        table = audit(chosen, rcfg.tiers)
        write_json(self.dir / "selection.json", [r["file"] for r in chosen])
        write_json(self.dir / "audit.json", {"corpus": audit(rows, rcfg.tiers), "selection": table, "caps": caps})
        shares = ", ".join(f"{t['tier']} {t['share']:.0%}" for t in table)
        self.log(f"replay selection: {len(chosen)}/{len(rows)} episodes; {shares}")
        return rows

    def train_world_model(self) -> None:
        """The iteration's world models (one per training seed), trained where missing (`run_configs`)."""
        plan, cfg = self.plan, self.cfg
        init_from = Path(plan.init_from) if plan.init_from else None
        runs = [
            replace(
                cfg.train,
                corpus=self.corpus,
                out=wm.parent,
                episodes=self.dir / "selection.json",
                init_from=init_from,
                seed=seed,
                balance_levels=cfg.train.balance_levels or len(cfg.levels) > 1,
                progress=cfg.progress and len(self.wms) == 1,
            )
            for wm, seed in zip(self.wms, plan.train_seeds)
        ]
        todo = [r for r in runs if not (r.out / "model.json").exists()]
        if not todo:
            return
        tcfg = todo[0]
        budget = f", {tcfg.minutes:g} min cap on the {tcfg.clock} clock" if tcfg.minutes else ""
        start = f", warm start from {plan.hof_best or plan.init_from}" if init_from else ", from scratch"
        self.log(f"train {len(todo)} world model(s) ({tcfg.steps} steps{budget}{start})")
        self.timed("train", lambda: self.parallel(train, todo))

    def parallel(self, fn, cfgs: list) -> list:
        cfg = self.cfg
        return run_configs(fn, cfgs, cfg.executor, cfg.workers, cfg.ray_address)

    def probe(self) -> dict:
        path = self.dir / "probe.json"
        if not path.exists():
            cfg = self.cfg
            pcfg = ProbeConfig(
                self.wm, corpus=self.corpus, max_frames=cfg.probe_frames, mlp_steps=cfg.probe_mlp_steps, out=path
            )
            self.timed("probe", lambda: run_probes(pcfg))
        return read_json(path)

    def imagine(self) -> dict[str, tuple[int, Path]]:
        """The K policies of each world model (trained in parallel where missing); returns policy label ->
        (world model index, checkpoint), world model by world model, in seed order."""
        cfg = self.cfg
        entropy = cfg.imagine.entropy * self.plan.settings.entropy_scale
        icfgs = {
            policy_label(w, seed): (w, replace(
                cfg.imagine,
                world_model=wm,
                corpus=self.corpus,
                episodes=self.dir / "selection.json",
                out=policy_dir(self.dir, w, seed),
                seed=seed,
                init_from=Path(self.plan.policy_init) if self.plan.policy_init else None,
                entropy=entropy,
                balance_levels=cfg.imagine.balance_levels or len(cfg.levels) > 1,
                progress=cfg.progress,
            ))
            for w, wm in enumerate(self.wms)
            for seed in self.plan.policy_seeds
        }  # fmt: skip
        todo = [c for _, c in icfgs.values() if not (c.out / "policy.json").exists()]
        if todo:
            at_once = min(len(todo), max(1, cfg.workers)) if cfg.executor == "local" else len(todo)
            self.log(f"train {len(todo)} policies in imagination ({cfg.executor}, {at_once} at a time)")
            self.timed("imagine", lambda: self.parallel(run_imagine, todo))
        return {label: (w, c.out / "policy.safetensors") for label, (w, c) in icfgs.items()}

    def evaluate(self, name: str, specs: tuple[str, ...], episodes: int, seed_offset: int = 0) -> dict:
        """The summary of an evaluation into ITER/name (played only when its summary is missing; with --levels on
        every level, `per_agent` pooling them)."""
        cfg, out = self.cfg, self.dir / name
        if not (out / "summary.json").exists():
            levels = f" on {len(cfg.levels)} levels" if cfg.levels else ""
            self.log(f"{name}: {len(specs)} policies x {episodes} episodes{levels}")
            ecfg = EvalConfig(
                agents=specs,
                episodes=episodes,
                out=out,
                seed_offset=seed_offset,
                env=cfg.env,
                levels=cfg.levels,
                workers=cfg.workers,
                progress=cfg.progress,
            )
            self.timed(name, lambda: evaluate_levels(ecfg) if cfg.levels else evaluate(ecfg))
        return read_json(out / "summary.json")

    def score(self, policies: dict[str, tuple[int, Path]]) -> tuple[dict[str, dict], dict, dict | None]:
        """Every policy on the harness: (label -> its aggregate, the K-seed summary whose sd is the policies' spread
        within their world models and whose best seed is the best by the detector's metric (`rank_key`), with
        --levels level -> label -> its aggregate on that level)."""
        specs = {label: f"policy:{path}" for label, (_, path) in policies.items()}
        summary = self.evaluate("eval", tuple(specs.values()), self.cfg.eval_episodes)
        per_seed = {label: summary["per_agent"][spec] for label, spec in specs.items()}
        per_level = summary.get("per_level")
        if per_level is not None:
            per_level = {lv: {label: agg[spec] for label, spec in specs.items()} for lv, agg in per_level.items()}
        kseed = kseed_summary(per_seed, best_by=lambda agg: rank_key(self.cfg.detector.metric, agg))
        kseed["sd_between_seeds"] = score_of(self.n, per_seed, self.plan).sd
        return per_seed, kseed, per_level

    def picked(self, policies: dict[str, tuple[int, Path]]) -> str | None:
        """The policy the iteration's confirmation played, when it did (a pick made once: resumed on code that ranks
        policies otherwise, the iteration keeps it)."""
        path = self.dir / "confirm" / "summary.json"
        if not path.exists():
            return None
        spec = next(iter(read_json(path)["per_agent"]))
        return next(label for label, (_, policy) in policies.items() if f"policy:{policy}" == spec)

    def decide(self, per_seed: dict[str, dict]) -> Decision:
        """The detector's decision against the finished iterations (decision.json, made once)."""
        path = self.dir / "decision.json"
        if path.exists():
            return Decision.from_json(read_json(path))
        history = [s.as_score for s in self.history]
        decision = decide(history, score_of(self.n, per_seed, self.plan), self.cfg.detector)
        means = {seed: s["mean_max_x"] for seed, s in per_seed.items()}
        write_json(path, decision_json(self.n, decision, self.plan, means))
        return decision

    def hall_of_fame(self, world_model: Path, policy: Path, extra: dict, confirmed: bool) -> dict:
        """The iteration's hall-of-fame entry (added once): its best policy, that policy's world model, the
        evaluations."""
        entry = next((e for e in hof.catalog(self.cfg.out) if e["iteration"] == self.n), None)
        if entry is not None:
            return entry
        confirm_dir = self.dir / "confirm" if confirmed else None
        metric = self.cfg.detector.metric
        return hof.add(self.cfg.out, self.n, world_model, policy, self.dir / "eval", extra, metric, confirm_dir)


def run_iteration(cfg: FlywheelConfig, n: int, history: list[IterationSummary]) -> IterationSummary:
    """Iteration n after the finished `history`: collect, explore, select, train, probe, imagine, evaluate, confirm,
    decide."""
    it = Iteration(cfg, n, history)
    model_error = it.model_error(it.collect())
    exploration = it.explore()
    rows = it.select()
    it.train_world_model()
    probe = it.probe()
    policies = it.imagine()
    per_seed, kseed, per_level = it.score(policies)
    best_label = it.picked(policies) or kseed["best_seed"]
    best_wm, best_policy = policies[best_label]
    best_spec = f"policy:{best_policy}"
    confirm = None
    if cfg.confirm_episodes:
        confirmation = it.evaluate("confirm", (best_spec,), cfg.confirm_episodes, CONFIRM_SEED_OFFSET)
        confirm = confirmation["per_agent"][best_spec]
    mean, sd = kseed["mean_of_means"], kseed["sd_between_seeds"]
    decision = it.decide(per_seed)
    it.log(
        f"{len(it.wms)} world model(s) x K={len(it.plan.policy_seeds)}: mean max_x {mean:.0f} +- {sd:.0f} (sd between "
        f"seeds) -> {decision.verdict.upper()}: {decision.reason}"
    )
    best_seed = int(best_label.rpartition("-")[2])
    extra = {
        "best_agent": best_spec,
        "best_seed": best_seed,
        "best_world_model": best_wm,
        "k_mean": mean,
        "k_sd": sd,
        "decision": decision.verdict,
    }
    entry = it.hall_of_fame(it.wms[best_wm], best_policy, extra, confirm is not None)
    wm_meta = read_json(it.wm.with_suffix(".json"))
    summary = IterationSummary(
        iteration=n,
        plan=it.plan,
        seed_scores=per_seed,
        k_mean=mean,
        k_sd=sd,
        best_seed=best_seed,
        confirm=confirm,
        decision=decision,
        hof_entry=entry["name"],
        world_model={"val": wm_meta["metrics"], "steps": wm_meta.get("step")},
        probes={name: {"linear": v["linear"], "mlp": v["mlp"]} for name, v in probe["probes"].items()},
        audit=read_json(it.dir / "audit.json"),
        timing=it.timing,
        corpus_episodes=len(rows),
        corpus_frames=frames(rows),
        best_corpus_x=max(r["max_x"] for r in rows),
        best_world_model=best_wm,
        exploration=exploration,
        level_scores=per_level,
        model_error=model_error,
    )
    write_json(it.dir / "summary.json", summary.to_json())
    return summary
