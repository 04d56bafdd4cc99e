"""`lemario flywheel`: lemario's main job. Each iteration (the seed's Flywheel v2, M1-M4):

    collect   episodes with the hall of fame's best policy plus biased-random exploration (iteration 1, with no
              policy yet: the biased-random baseline) into RUN/corpus, --on-policy of them played alone (by the
              best, or with --on-policy-by last the previous iteration's K policies in turn); the warm-start world
              model's progress error on them is measured (`lemario.model.progress`: does it read walls as
              progress where the policy went?)
    select    the bounded, stratified replay selection of the corpus (`lemario.data.replay`), audit table saved
    train     the world model on the selection, warm-started from the hall of fame's best world model
    probe     linear/MLP probes of the new world model to RAM physics (`lemario.model.probes`)
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
only, and saved (`lemario.flywheel.plan`); the steps are in `lemario.flywheel.iteration`. One process
writes a run folder at a time.

A `branch` decision re-runs the next iteration with one variable flipped (`lemario.flywheel.detector.FLIPS`); a flip
that then commits is kept, one that does not is reverted. `halt` stops the run until an operator passes
`--continue-after-halt`.

    RUN/config.json               resolved config, git commit, seeds
    RUN/state.json                finished iterations and their decisions (derived; for people and the report)
    RUN/corpus/                   every episode ever collected (HDF5, `lemario.data.corpus`)
    RUN/corpus/explore/           with --explore-steps: the frontier exploration (`lemario explore`), a sub-corpus
    RUN/corpus/<level>/           with --levels: each level's collected episodes (and explore-<level>/ its exploration)
    RUN/iterNNN/plan.json         the iteration's settings;  selection.json, audit.json;  wm/ (a `lemario train` run)
    RUN/iterNNN/progress.json     the warm-start model's progress error on the episodes just collected
    RUN/iterNNN/probe.json  policies/s{seed}/  eval/  confirm/  decision.json  summary.json
                                  (with --levels, eval/ and confirm/ hold a folder per level and the pooled summary)
    RUN/hof/                      the hall of fame (`lemario.flywheel.hof`)
"""

from __future__ import annotations

import time
from pathlib import Path

from lemario.core.files import check_writable, read_json, write_json, writer_lock
from lemario.core.provenance import provenance
from lemario.core.runconfig import as_json, check_same_run, run_key
from lemario.flywheel import hof
from lemario.flywheel.config import BOOKKEEPING, FlywheelConfig, iter_dir
from lemario.flywheel.fork import fork, link_tree
from lemario.flywheel.iteration import run_iteration
from lemario.flywheel.keys import upgrade_key
from lemario.flywheel.summary import IterationSummary, emulated_steps, hof_curve


def finished(run: Path) -> list[IterationSummary]:
    """Summaries of the finished iterations of a run folder, in order."""
    out, n = [], 1
    while (iter_dir(run, n) / "summary.json").exists():
        out.append(IterationSummary.from_json(read_json(iter_dir(run, n) / "summary.json")))
        n += 1
    return out


def write_state(cfg: FlywheelConfig, summaries: list[IterationSummary], status: str) -> None:
    """RUN/state.json: where the run stands, for people and tools (derived from the iterations' summaries)."""
    best = hof.top(cfg.out)
    iterations = [
        {
            "iteration": s.iteration,
            "k_mean": s.k_mean,
            "k_sd": s.k_sd,
            "seed_means": {k: v["mean_max_x"] for k, v in s.seed_scores.items()},
            "flags": list(s.flags),
            "env_steps": s.env_steps,
            "emulated_steps": emulated,
            "confirm_mean": s.confirm["mean_max_x"] if s.confirm else None,
            "decision": s.decision.verdict,
            "reason": s.decision.reason,
            "seconds": sum(s.timing.values()),
        }
        for s, emulated in zip(summaries, emulated_steps(summaries))
    ]
    state = {"status": status, "iterations_done": len(summaries), "hof_best": best[0] if best else None}
    write_json(cfg.out / "state.json", {**state, "iterations": iterations})


def _open_run(cfg: FlywheelConfig) -> bool:
    """Write config.json for a new run (a fork's after its iterations are in: a fork killed midway forks again), or
    check that the folder holds this run; whether it was new."""
    key, defaults = run_key(cfg, BOOKKEEPING), run_key(FlywheelConfig(), BOOKKEEPING)
    if (cfg.out / "config.json").exists():
        stored = upgrade_key(read_json(cfg.out / "config.json")["run_key"])
        check_same_run(stored, key, defaults, cfg.out, "flywheel run")
        return False
    record = {"created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **provenance()}
    if cfg.fork_from is not None:
        record["forked_from"] = fork(cfg.fork_from, cfg.fork_after, cfg.out, key, defaults)
        differs = "; ".join(record["forked_from"]["differs"]) or "nothing"
        print(f"forked {cfg.fork_from} after iteration {cfg.fork_after}; from there on it differs in: {differs}")
    if cfg.base_corpus is not None:
        base = Path(cfg.base_corpus)  # its own episodes (the run's corpus reads one level of sub-folders)
        link_tree(base, cfg.out / "corpus" / "base", keep=lambda p: p.suffix == ".h5" and p.parent == base)
        print(f"the run trains on {cfg.base_corpus}'s episodes too (linked into {cfg.out / 'corpus' / 'base'})")
    write_json(cfg.out / "config.json", {"run_key": key, "config": as_json(cfg), **record})
    return True


def flywheel(cfg: FlywheelConfig) -> list[IterationSummary]:
    """Run (or resume) iterations until `cfg.iterations` are finished, or the detector halts the run."""
    cfg.validate()
    check_writable(cfg.out)
    with writer_lock(cfg.out):
        new = _open_run(cfg)
        summaries = finished(cfg.out)
        if summaries and not new:  # a new fork has said what it holds
            print(f"resuming {cfg.out}: {len(summaries)} iterations finished")
        while len(summaries) < cfg.iterations:
            last = summaries[-1].decision if summaries else None
            if last and last.verdict == "halt" and not cfg.continue_after_halt:
                print(
                    f"halted after iteration {summaries[-1].iteration}: {last.reason}; "
                    "pass --continue-after-halt to go on"
                )
                write_state(cfg, summaries, "halted")
                return summaries
            write_state(cfg, summaries, "running")  # a halted run that goes on says so while it runs
            summaries.append(run_iteration(cfg, len(summaries) + 1, summaries))
        write_state(cfg, summaries, "done")
    return summaries


def format_table(summaries: list[IterationSummary]) -> str:
    """One line per iteration: the corpus's env steps after it and every env step the run emulated by then (the
    evaluations' play too: `emulated_steps`), K-seed mean and sd, the seeds' means, the flags over
    their evaluations, the confirmation, the best so far, the verdict, and the world model's optimizer steps (a
    `--train.minutes` cap on the wall clock, a run's begun before session 57, can stop it short of `--train.steps` on
    a busy machine: the run then depends on the load)."""
    header = f"{'iter':>4}  {'env steps':>9}  {'emulated':>9}  {'K-seed mean':>11}  {'sd':>5}  "
    lines = [
        header + f"{'seeds (mean max_x)':<28}{'flags':>7}{'confirm':>9}  {'HOF best':>8}  {'decision':<8}  WM steps"
    ]
    for s, best, emulated in zip(summaries, hof_curve(summaries), emulated_steps(summaries)):
        seeds = " ".join(f"{v['mean_max_x']:.0f}" for v in s.seed_scores.values())
        flags = "/".join(map(str, s.flags))
        lines.append(
            f"{s.iteration:>4}  {s.env_steps:>9}  {emulated:>9}  {s.k_mean:>11.0f}  {s.k_sd:>5.0f}  "
            f"{seeds:<28}{flags:>7}"
            f"{s.score['mean_max_x']:>9.0f}  {best['score']:>8.0f}  {s.decision.verdict:<8}  "
            f"{s.world_model.get('steps')}"
        )
    return "\n".join(lines)


def flywheel_main(cfg: FlywheelConfig) -> None:
    summaries = flywheel(cfg)
    print(format_table(summaries))
    print(f"hall of fame: `lemario hof list {cfg.out}`; report: `lemario report {cfg.out}`")
