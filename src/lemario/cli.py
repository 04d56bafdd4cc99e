"""The `lemario` command: `lemario SUBCOMMAND [--preset NAME] [--field value ...]`.

Each subcommand parses one frozen dataclass config with tyro; `--preset` picks the defaults that the other
flags then override (`tiny` for tests and CI, `cpu` for this kind of machine, `gpu` for a big one).
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, NoReturn

import tyro

from lemario import status
from lemario.analysis import env_steps, straightening, surprise
from lemario.baselines import ppo
from lemario.baselines import summary as ppo_summary
from lemario.control import imagination
from lemario.core.errors import LemarioError
from lemario.core.provenance import git_commit
from lemario.data.corpus import INDEX_NAME, format_summary, scan, warn_unreadable
from lemario.data.coverage import action_coverage, format_coverage
from lemario.flywheel import config as flywheel_config
from lemario.flywheel import draws, hof, redecide, report, study
from lemario.flywheel import run as flywheel
from lemario.model import decoder, diagnose, probes, train
from lemario.play import (
    collect,
    evaluate,
    explore,
    push_data,
    push_fidelity,
    push_goal,
    push_match,
    push_pool,
    render,
)
from lemario.web import push_server


@dataclass(frozen=True)
class CorpusConfig:
    corpus: tyro.conf.Positional[Path]
    """Corpus folder."""
    rebuild: bool = False
    """Reopen every file instead of trusting the cached index rows."""
    actions: bool = False
    """Also the actions taken at each place of the level (share per x bin; Mario corpora; a table per level)."""
    bin_px: int = 200
    """Width in pixels of x of the action table's bins."""


def corpus_main(cfg: CorpusConfig) -> None:
    if cfg.rebuild:
        (cfg.corpus / INDEX_NAME).unlink(missing_ok=True)
    index = scan(cfg.corpus)
    print(format_summary(index, title=str(cfg.corpus)))
    warn_unreadable(cfg.corpus, index)
    if cfg.actions:
        levels = sorted({e["level"] for e in index.episodes if e.get("game", "mario") == "mario"})
        for level in levels if len(levels) > 1 else [None]:
            title = f" on {level}" if level else ""
            print(format_coverage(action_coverage(cfg.corpus, cfg.bin_px, level), title))


class Command(NamedTuple):
    help: str
    config: type
    presets: dict | None
    main: Callable


COMMANDS = {
    "flywheel": Command(
        "lemario's main job: collect -> retrain -> K policies in imagination -> evaluate -> decide, resumable",
        flywheel_config.FlywheelConfig,
        flywheel_config.PRESETS,
        flywheel.flywheel_main,
    ),
    "collect": Command(
        "collect episodes into a corpus folder with W worker processes",
        collect.CollectConfig,
        collect.PRESETS,
        collect.collect_main,
    ),
    "explore": Command(
        "frontier exploration (Go-Explore): restore archived cells, explore from them, into a corpus; resumable",
        explore.ExploreConfig,
        explore.PRESETS,
        explore.explore_main,
    ),
    "corpus": Command("summarize a corpus folder (and rebuild its index)", CorpusConfig, None, corpus_main),
    "train": Command(
        "train the JEPA world model on a corpus (resumes its --out folder)",
        train.TrainConfig,
        train.PRESETS,
        train.train_main,
    ),
    "probe": Command(
        "linear and MLP probes from a checkpoint's embeddings to RAM physics",
        probes.ProbeConfig,
        None,
        probes.probe_main,
    ),
    "diagnose": Command(
        "collapse diagnostics of a world-model checkpoint", diagnose.DiagnoseConfig, None, diagnose.diagnose_main
    ),
    "imagine": Command(
        "train an actor-critic policy inside a frozen world model",
        imagination.ImagineConfig,
        imagination.PRESETS,
        imagination.imagine_main,
    ),
    "render": Command(
        "the best of N episodes of an agent as MP4 and GIF, with overlay and latent drift",
        render.RenderConfig,
        None,
        render.render_main,
    ),
    "baseline ppo": Command(
        "the model-free baseline: Stable-Baselines3 PPO with the recipe that cleared 1-1",
        ppo.PPOConfig,
        ppo.PRESETS,
        ppo.ppo_main,
    ),
    "baseline summary": Command(
        "PPO runs (one per seed) side by side: learning curves and the env steps to each milestone",
        ppo_summary.SummaryConfig,
        None,
        ppo_summary.summary_main,
    ),
    "compare": Command(
        "world-model flywheel runs beside PPO runs against env steps: curves, milestones, equal-steps table",
        env_steps.CompareConfig,
        None,
        env_steps.compare_main,
    ),
    "report": Command(
        "a flywheel run as HTML and Markdown: K-seed scores, HOF best, tiers, world model, best video",
        report.ReportConfig,
        None,
        report.report_main,
    ),
    "hof": Command("the hall of fame of a flywheel run: list | show | export", hof.HofConfig, None, hof.hof_main),
    "status": Command(
        "where a run folder (flywheel, train, baseline ppo, eval, collect) stands, read while it runs",
        status.StatusConfig,
        None,
        status.status_main,
    ),
    "push data": Command(
        "the push game: training episodes of the seed's regimes in turns, into a corpus folder (resumable)",
        push_data.PushDataConfig,
        None,
        push_data.data_main,
    ),
    "push match": Command(
        "the push game: one player against opponents, both sides, win rates with 95% CIs",
        push_match.MatchConfig,
        None,
        push_match.match_main,
    ),
    "push pool": Command(
        "the push game: recorded matches of several model seeds as one player (3 seeds x 50), paired with another's",
        push_pool.PoolConfig,
        None,
        push_pool.pool_main,
    ),
    "push table": Command(
        "the push game: every player against every other (scripted players and the simulator planner)",
        push_match.TableConfig,
        None,
        push_match.table_main,
    ),
    "push goal": Command(
        "the push game: goal reaching from pixels (the LeWorldModel evaluation), against idle and random play",
        push_goal.GoalConfig,
        None,
        push_goal.goal_main,
    ),
    "push fidelity": Command(
        "the push game: how well world models rank a turn's candidate thrusts against the true simulator",
        push_fidelity.FidelityConfig,
        None,
        push_fidelity.fidelity_main,
    ),
    "push serve": Command(
        "the push game in the browser: a person against the latent-planning world model (FastAPI + WebSocket)",
        push_server.ServeConfig,
        None,
        push_server.serve_main,
    ),
    "analyze decoder": Command(
        "a post-hoc decoder from frozen embeddings to frames, scored against the mean and the previous frame",
        decoder.DecoderConfig,
        None,
        decoder.decoder_main,
    ),
    "analyze surprise": Command(
        "violation of expectation: the world model's surprise at teleports and at recolouring, paired tests",
        surprise.SurpriseConfig,
        None,
        surprise.surprise_main,
    ),
    "analyze straightening": Command(
        "temporal straightening of real and predicted latent trajectories along training (snapshots, iterations)",
        straightening.StraighteningConfig,
        None,
        straightening.straightening_main,
    ),
    "study variance": Command(
        "where score noise comes from: W world models x K policies on the same episodes, components and power",
        study.VarianceStudyConfig,
        study.PRESETS,
        study.study_main,
    ),
    "study draws": Command(
        "what a flywheel iteration delivers over its draws: each run's pick on fresh seeds, pooled with intervals",
        draws.DrawsStudyConfig,
        None,
        draws.study_draws_main,
    ),
    "study detector": Command(
        "what a detector config decides over finished flywheel runs, beside what they decided (reads, writes nothing)",
        redecide.DetectorStudyConfig,
        None,
        redecide.study_detector_main,
    ),
    "eval": Command(
        "evaluate agents over N stochastic episodes with multi-seed statistics",
        evaluate.EvalConfig,
        None,
        evaluate.eval_main,
    ),
}


def _usage() -> str:
    lines = ["usage: lemario COMMAND [--preset NAME] [OPTIONS]", "", "commands:"]
    width = max(len(name) for name in COMMANDS) + 2
    lines += [f"  {name:<{width}}{command.help}" for name, command in COMMANDS.items()]
    lines.append("\n`lemario COMMAND --help` lists a command's options.")
    return "\n".join(lines)


def _fail(prefix: str, message: str) -> NoReturn:
    """A usage error: one line on stderr, exit status 2."""
    print(f"{prefix}: error: {message}", file=sys.stderr)
    sys.exit(2)


def _split_preset(name: str, rest: list[str]) -> tuple[object | None, list[str]]:
    """The preset named by `--preset NAME` (None without one) and the other arguments."""
    if "--preset" not in rest:
        return None, rest
    presets = COMMANDS[name].presets or {}
    i = rest.index("--preset")
    preset = rest[i + 1] if i + 1 < len(rest) else ""
    if preset not in presets:
        choices = f"use one of {', '.join(presets)}" if presets else "this command has none"
        _fail(f"lemario {name}", f"unknown preset {preset!r}: {choices}")
    return presets[preset], rest[:i] + rest[i + 2 :]


def _parse(name: str, config: type, args: list[str], default, description: str):
    """tyro's parse of the arguments; a parse error becomes one line (tyro draws it as a box over several)."""
    errors = io.StringIO()
    try:
        with contextlib.redirect_stderr(errors):
            return tyro.cli(config, args=args, default=default, prog=f"lemario {name}", description=description)
    except SystemExit as e:
        if e.code in (0, None):  # --help
            raise
        lines = [ln.strip(" │╭╮╰╯─") for ln in errors.getvalue().splitlines()][1:]  # below the box's title
        body = lines[: lines.index("")] if "" in lines else lines  # up to the box's first rule
        message = " ".join(" ".join(body).split()) or "the arguments could not be parsed"
        _fail(f"lemario {name}", f"{message}; see `lemario {name} --help`")


def _interrupt(signum, frame) -> NoReturn:
    raise KeyboardInterrupt


def _redeliver_interrupt(unraisable) -> None:
    """A Ctrl-C (or SIGTERM) that lands in a callback Python cannot raise from (pymunk frees its bodies from cffi's
    garbage-collection callback, `__del__` methods) is printed and dropped there, and the command would run on:
    deliver it again, a moment later from another thread, so that it is raised where the command is once this hook
    has returned, not in the hook (where it would be dropped again)."""
    if issubclass(unraisable.exc_type, KeyboardInterrupt):
        again = threading.Timer(0.05, os.kill, (os.getpid(), signal.SIGINT))
        again.daemon = True
        again.start()
    else:
        sys.__unraisablehook__(unraisable)


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return
    name, rest = argv[0], argv[1:]
    groups = {n.split()[0] for n in COMMANDS if " " in n}
    if name in groups and rest and not rest[0].startswith("-"):  # two words: `lemario baseline ppo`
        name, rest = f"{name} {rest[0]}", rest[1:]
    if name not in COMMANDS:
        _fail(
            "lemario",
            f"unknown command {name!r}: use one of {', '.join(COMMANDS)} (`lemario --help` says what each does)",
        )
    command = COMMANDS[name]
    git_commit()  # read now: what this process runs, whatever the checkout becomes while it runs
    signal.signal(signal.SIGTERM, _interrupt)  # a SIGTERM stops a command as Ctrl-C does: what is written stays
    # A script's background job (`cmd &` in a shell without job control) starts with SIGINT ignored, and Python then
    # keeps it ignored: `kill -INT` must stop such a run as Ctrl-C stops one at a terminal.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.unraisablehook = _redeliver_interrupt
    default, rest = _split_preset(name, rest)
    presets = f" (presets: {', '.join(command.presets)}; pick one with --preset NAME)" if command.presets else ""
    cfg = _parse(name, command.config, rest, default, command.help + presets)
    out = getattr(cfg, "out", None)
    if out is not None:
        print(f"lemario {name}: writing {out}", flush=True)  # the first line: where it writes
    try:
        command.main(cfg)
    except LemarioError as e:
        _fail(f"lemario {name}", str(e))
    except BrokenPipeError:  # the reader went away (`lemario corpus C | head`): nothing left to tell it
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes stdout
        sys.exit(141)
    except KeyboardInterrupt:
        print(
            f"lemario {name}: interrupted; everything already written is intact, re-run the command to resume",
            file=sys.stderr,
        )
        sys.exit(130)


if __name__ == "__main__":
    main()
