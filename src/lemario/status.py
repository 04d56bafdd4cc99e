"""`lemario status RUN`: where a run folder stands and what it last measured, read from its files while it runs.

Knows the folders of `flywheel`, `train`, `baseline ppo`, `eval` and `collect`; reads, never writes (safe beside
the process that writes the folder).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import tyro

from lemario.baselines.milestones import KEYS
from lemario.core import runlog
from lemario.core.errors import LemarioError
from lemario.core.files import read_json
from lemario.data.corpus import format_summary, scan
from lemario.flywheel.config import iter_dir
from lemario.flywheel.plan import Plan
from lemario.flywheel.run import finished, format_table
from lemario.play.evaluate import PARTIAL
from lemario.play.evaluate import format_summary as format_eval


@dataclass(frozen=True)
class StatusConfig:
    run: tyro.conf.Positional[Path]
    """A run folder: of `lemario flywheel`, `train`, `baseline ppo`, `eval` or `collect` (its --out)."""


def kind_of(run: Path) -> str:
    """'flywheel', 'train', 'ppo', 'eval' or 'corpus', from the files a run folder holds."""
    config = read_json(run / "config.json") if (run / "config.json").is_file() else {}
    key = config.get("run_key", {})
    if "k" in key and "train" in key:
        return "flywheel"
    if "model" in key and "loss" in key:
        return "train"
    if "n_envs" in config.get("config", {}):
        return "ppo"
    if (run / PARTIAL).is_file() or ((run / "summary.json").is_file() and (run / "episodes.jsonl").is_file()):
        return "eval"
    if any(run.glob("*.h5")) or (run / "index.json").is_file():
        return "corpus"
    raise LemarioError(
        f"{run} is not a lemario run folder: pass the --out folder of flywheel, train, baseline ppo, eval or collect"
    )


def train_status(run: Path) -> list[str]:
    """Steps done of the schedule, the checkpoint a resume would start from, the last losses."""
    cfg = read_json(run / "config.json")["config"]
    rows = runlog.read_rows(run / runlog.NAME)
    train_rows = [r for r in rows if "loss/total" in r]
    val_rows = [r for r in rows if "val/loss/pred" in r]
    ckpt = read_json(run / "ckpt_latest.json")["step"] if (run / "ckpt_latest.json").is_file() else 0
    done = (run / "model.json").is_file()
    step = train_rows[-1]["step"] if train_rows else 0
    end = min(cfg["steps"], cfg["stop_at"]) if cfg.get("stop_at") else cfg["steps"]
    lines = [
        f"world-model training {run}: {'finished' if done else 'unfinished'}, step {step} of {end} "
        f"logged, checkpoint at step {ckpt}"
    ]
    if train_rows:
        r = train_rows[-1]
        lines.append(
            f"  step {r['step']} ({r['time']:.0f} s): pred {r['loss/pred']:.4f}, sigreg {r['loss/sigreg']:.3f}, "
            f"reward {r['loss/reward']:.4f}"
        )
    if val_rows:
        r = val_rows[-1]
        lines.append(
            f"  held out at step {r['step']}: pred {r['val/loss/pred']:.4f}, sigreg {r['val/loss/sigreg']:.3f}"
        )
    return lines


def _iteration_steps(run: Path, n: int) -> str:
    """How far iteration n got, step by step, from its files."""
    d = iter_dir(run, n)
    plan = Plan.from_json(read_json(d / "plan.json"))
    corpus = run / "corpus"
    levels = len(read_json(corpus / "levels.json")["levels"]) if (corpus / "levels.json").is_file() else 1
    collected = len([*corpus.glob(f"iter{n:03d}-*.h5"), *corpus.glob(f"*/iter{n:03d}-*.h5")])
    parts = [f"collect {collected}/{plan.collect_episodes * levels}"]
    if (d / "wm" / "config.json").is_file():
        steps = read_json(d / "wm" / "config.json")["config"]["steps"]
        ckpt = read_json(d / "wm" / "ckpt_latest.json")["step"] if (d / "wm" / "ckpt_latest.json").is_file() else 0
        parts.append("world model done" if (d / "wm" / "model.json").is_file() else f"train checkpoint {ckpt}/{steps}")
    parts.append(f"probe {'done' if (d / 'probe.json').is_file() else '-'}")
    policies = sum((d / "policies" / f"s{s}" / "policy.json").is_file() for s in plan.policy_seeds)
    parts.append(f"policies {policies}/{len(plan.policy_seeds)}")
    for name in ("eval", "confirm"):
        if (d / name / "summary.json").is_file():
            parts.append(f"{name} done")
        elif (d / name / PARTIAL).is_file():
            parts.append(f"{name} {len(runlog.read_rows(d / name / PARTIAL)) - 1} episodes")
    return ", ".join(parts)


def flywheel_status(run: Path) -> list[str]:
    """The finished iterations' table and the current iteration's steps."""
    summaries = finished(run)
    state = read_json(run / "state.json") if (run / "state.json").is_file() else {}
    lines = [f"flywheel {run}: {len(summaries)} iterations finished ({state.get('status', 'running')})"]
    if summaries:
        lines.append(format_table(summaries))
    n = len(summaries) + 1
    if (iter_dir(run, n) / "plan.json").is_file():
        lines.append(f"iteration {n}: {_iteration_steps(run, n)}")
    return lines


def ppo_status(run: Path) -> list[str]:
    """Env steps of the budget, the best evaluation, the milestones of both kinds."""
    cfg, state = read_json(run / "config.json")["config"], read_json(run / "state.json")
    evals = [r for r in runlog.read_rows(run / runlog.NAME) if "eval/mean_max_x" in r]

    def firsts(reached: dict) -> str:
        return " / ".join(f"{reached[k]:,}" if k in reached else "-" for k in KEYS)

    lines = [
        f"PPO run {run}: {state['env_steps']:,} of {cfg['timesteps']:,} env steps, best evaluation mean max_x "
        f"{state['best_eval']:.0f}",
        f"  first at x >= 700 / 1500 / 2000 / flag: training episode {firsts(state['first_reached'])}; "
        f"evaluation mean {firsts(state['first_eval_reached'])}",
    ]
    if evals:
        e = evals[-1]
        lines.append(
            f"  last evaluation at {e['env_steps']:,}: mean max_x {e['eval/mean_max_x']:.0f}, "
            f"flag rate {e['eval/flag_rate']:.2f}"
        )
    return lines


def eval_status(run: Path) -> list[str]:
    """The finished evaluation's table, or the episodes played so far per agent."""
    if (run / "summary.json").is_file():
        return [format_eval({**read_json(run / "summary.json"), "out": str(run)})]
    rows = runlog.read_rows(run / PARTIAL)[1:]
    agents = sorted({r["agent"] for r in rows})
    per_agent = ", ".join(f"{a}: {sum(r['agent'] == a for r in rows)}" for a in agents)
    return [f"evaluation {run}: unfinished, {len(rows)} episodes played ({per_agent or 'none yet'})"]


def status(run: Path) -> str:
    """The status lines of any lemario run folder."""
    if not run.is_dir():
        raise LemarioError(f"{run} does not exist: pass a run folder (the --out of a lemario command)")
    kind = kind_of(run)
    try:
        if kind == "corpus":
            return format_summary(scan(run, write=False), title=str(run))
        return "\n".join(
            {"flywheel": flywheel_status, "train": train_status, "ppo": ppo_status, "eval": eval_status}[kind](run)
        )
    except (OSError, KeyError, ValueError) as e:  # a file from another lemario, or being replaced
        raise LemarioError(
            f"cannot read the {kind} run {run} ({type(e).__name__}: {e}): run it again in a moment, or check the folder"
        ) from None


def status_main(cfg: StatusConfig) -> None:
    print(status(cfg.run))
