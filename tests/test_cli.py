"""Bad input through the real command line: every case exits 2 with one line on stderr that names the problem and
the fix, no traceback, and leaves everything already written as it was."""

from __future__ import annotations

import hashlib
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from lemario.data.corpus import scan, write_episode
from lemario.model.train import PRESETS, train

from conftest import _cli_env, run_cli_many
from synthetic import make_episode, write_corpus

ROOT = "{root}"  # replaced by the fixture folder in every argument


CASES = [  # (id, arguments, a fragment of the expected message)
    ("unknown-command", ["frobnicate"], "unknown command 'frobnicate'"),
    (
        "unknown-preset",
        ["flywheel", "--preset", "huge"],
        "unknown preset 'huge': use one of tiny, cpu, cpu-explore, cpu-levels, gpu",
    ),
    ("preset-of-a-command-without", ["corpus", "{root}/corpus", "--preset", "tiny"], "this command has none"),
    ("not-a-number", ["collect", "--episodes", "abc"], "Error parsing --episodes"),
    ("unknown-option", ["collect", "--bogus", "1"], "Unrecognized options: --bogus"),
    ("missing-positional", ["hof", "list"], "Missing from lemario hof"),
    ("level", ["collect", "--level", "9-9", "--out", "{root}/new"], "unknown level '9-9'"),
    ("level-form", ["eval", "biased", "--level", "one", "--out", "{root}/new"], "is not of the form W-S"),
    ("backend", ["collect", "--backend", "snes", "--out", "{root}/new"], "unknown backend 'snes'"),
    ("action-set", ["collect", "--action-set", "all", "--out", "{root}/new"], "unknown action set 'all'"),
    ("frame-skip", ["collect", "--frame-skip", "1", "--out", "{root}/new"], "frame_skip must be at least 2"),
    ("episodes", ["collect", "--episodes", "0", "--out", "{root}/new"], "--episodes and --workers must be at least 1"),
    ("explore", ["collect", "--explore", "1.5", "--out", "{root}/new"], "is not a probability"),
    ("explore-x-odd", ["collect", "--explore", "0.2", "--explore-x", "5", "--out", "{root}/new"], "give pairs X0 X1"),
    ("explore-x-empty", ["collect", "--explore", "0.2", "--explore-x", "9", "5", "--out", "{root}/new"], "is empty"),
    ("explore-x-alone", ["collect", "--explore-x", "5", "9", "--out", "{root}/new"], "pass --explore RATE > 0"),
    ("ends-alone", ["collect", "--explore-at-ends", "2", "--out", "{root}/new"], "pass --explore RATE > 0"),
    (
        "ends-all-explored",
        ["collect", "--explore", "0.2", "--explore-at-ends", "2", "--out", "{root}/new"],
        "--on-policy > 0",
    ),
    (
        "ends-and-windows",
        ["collect", "--explore", "0.2", "--explore-at-ends", "2", "--explore-x", "5", "9", "--out", "{root}/new"],
        "without --explore-x",
    ),
    ("policy", ["collect", "--policy", "greedy", "--out", "{root}/new"], "unknown agent 'greedy'"),
    ("policy-path", ["collect", "--policy", "policy:", "--out", "{root}/new"], "needs a checkpoint: write policy:PATH"),
    ("run-name", ["collect", "--run", "run-0001", "--out", "{root}/new"], "not starting with 'run-'"),
    ("executor", ["collect", "--executor", "spark", "--out", "{root}/new"], "unknown executor 'spark'"),
    ("rom", ["collect", "--rom", "{root}/none.nes", "--out", "{root}/new"], "ROM not found"),
    ("out-is-a-file", ["collect", "--out", "{root}/afile/sub", "--episodes", "1"], "choose a writable --out folder"),
    ("corpus-missing", ["corpus", "{root}/nothing"], "does not exist: collect one"),
    ("corpus-bin", ["corpus", "{root}/corpus", "--actions", "--bin-px", "0"], "the bin width must be at least 1"),
    ("train-corpus-missing", ["train", "--corpus", "{root}/nothing", "--out", "{root}/new"], "does not exist"),
    ("train-corpus-empty", ["train", "--corpus", "{root}/empty", "--out", "{root}/new"], "has no readable episodes"),
    ("train-corrupt", ["train", "--corpus", "{root}/damaged", "--out", "{root}/new"], "--skip-unreadable"),
    (
        "episode-list",
        ["train", "--corpus", "{root}/corpus", "--episodes", "{root}/no.json", "--out", "{root}/new"],
        "cannot read the episode list",
    ),
    (
        "init-from-garbage",
        [
            "train",
            "--preset",
            "tiny",
            "--corpus",
            "{root}/corpus",
            "--init-from",
            "{root}/garbage.safetensors",
            "--out",
            "{root}/new",
        ],
        "the checkpoint is damaged",
    ),
    ("device", ["train", "--corpus", "{root}/corpus", "--device", "tpu", "--out", "{root}/new"], "unknown device"),
    (
        "oversample",
        ["train", "--corpus", "{root}/corpus", "--oversample", "1", "2", "--out", "{root}/new"],
        "--oversample 1.0 2.0: give 5 weights >= 0, one per tier",
    ),
    (
        "precision",
        ["train", "--corpus", "{root}/corpus", "--precision", "fp8", "--out", "{root}/new"],
        "unknown precision",
    ),
    (
        "mixed-action-sets",
        ["train", "--corpus", "{root}/mixed", "--out", "{root}/new"],
        "mixes the action sets complex and right-only",
    ),
    (
        "other-config",
        ["train", "--preset", "tiny", "--corpus", "{root}/corpus", "--out", "{root}/wm", "--lr", "0.1"],
        "lr: 0.0003 -> 0.1",
    ),
    ("probe-missing", ["probe", "{root}/none.safetensors", "--corpus", "{root}/corpus"], "no checkpoint at"),
    ("probe-garbage", ["probe", "{root}/garbage.safetensors", "--corpus", "{root}/corpus"], "is damaged"),
    (
        "diagnose-wrong-kind",
        ["diagnose", "{root}/wm/ckpt_latest.safetensors", "--corpus", "{root}/corpus"],
        "is a 'world_model_training' checkpoint, expected 'world_model'",
    ),
    ("eval-no-agent", ["eval"], "no agent to evaluate"),
    ("eval-episodes", ["eval", "biased", "--episodes", "0", "--out", "{root}/new"], "must be at least 1"),
    ("eval-agent", ["eval", "genius", "--out", "{root}/new"], "unknown agent 'genius'"),
    ("eval-checkpoint", ["eval", "planner:{root}/none.safetensors", "--out", "{root}/new"], "no checkpoint at"),
    ("eval-prior", ["eval", "biased", "--planner.prior", "greedy", "--out", "{root}/new"], "unknown planner prior"),
    ("eval-budget", ["eval", "biased", "--planner.elites", "999", "--out", "{root}/new"], "elites <= samples"),
    (
        "eval-policy-prior",
        ["eval", "biased", "--planner.prior", "policy", "--out", "{root}/new"],
        "needs --planner.value",
    ),
    (
        "eval-policy-mix",
        ["eval", "biased", "--planner.policy-mix", "2", "--out", "{root}/new"],
        "not a weight in [0, 1]",
    ),
    (
        "eval-value",
        ["eval", "biased", "--planner.value", "{root}/none.safetensors", "--out", "{root}/new"],
        "no policy checkpoint",
    ),
    (
        "eval-action-count",
        [
            "eval",
            "planner:{root}/wm/model.safetensors",
            "--action-set",
            "simple",
            "--workers",
            "1",
            "--out",
            "{root}/new",
        ],
        "pass --action-set complex",
    ),
    (
        "eval-frame-size",
        [
            "eval",
            "planner:{root}/wm/model.safetensors",
            "--action-set",
            "complex",
            "--resize",
            "96",
            "--out",
            "{root}/new",
        ],
        "reads stacks of 4 frames of 84 px, the env gives 4 of 96 px: pass --frame-stack 4 --resize 84",
    ),
    (
        "eval-frame-crop",
        [
            "eval",
            "planner:{root}/wm/model.safetensors",
            "--action-set",
            "complex",
            "--crop-top",
            "32",
            "--out",
            "{root}/new",
        ],
        "reads frames cut 0 rows from the top, max-pooled; the env's are cut 32, max-pooled: pass --crop-top 0 --pool",
    ),
    ("render-agent", ["render", "genius", "--out", "{root}/new"], "unknown agent 'genius'"),
    (
        "imagine-world-model",
        ["imagine", "--world-model", "{root}/none.safetensors", "--out", "{root}/new"],
        "no checkpoint at",
    ),
    (
        "imagine-death-share",
        ["imagine", "--world-model", "{root}/wm/model.safetensors", "--death-share", "2", "--out", "{root}/new"],
        "use a share in [0, 1]",
    ),
    (
        "flywheel-death-share",
        ["flywheel", "--imagine.death-share", "-1", "--out", "{root}/new"],
        "use a share in [0, 1]",
    ),
    ("flywheel-k", ["flywheel", "--k", "1", "--out", "{root}/new"], "needs at least 2 policies"),
    ("flywheel-frame-size", ["flywheel", "--resize", "96", "--out", "{root}/new"], "frames of 112 px, the env gives"),
    ("flywheel-detector", ["flywheel", "--detector.rule", "vibes", "--out", "{root}/new"], "unknown detector rule"),
    ("flywheel-metric", ["flywheel", "--detector.metric", "luck", "--out", "{root}/new"], "unknown detector metric"),
    (
        "flywheel-variance",
        ["flywheel", "--detector.variance", "{root}/corpus", "--out", "{root}/new"],
        "is not a variance study's variance.json",
    ),
    ("study-k", ["study", "variance", "--k", "1", "--out", "{root}/new"], "2 policies each (--k)"),
    ("flywheel-executor", ["flywheel", "--executor", "spark", "--out", "{root}/new"], "unknown executor"),
    ("flywheel-hidden-flag", ["flywheel", "--train.corpus", "x", "--out", "{root}/new"], "Unrecognized options"),
    ("ppo-level", ["baseline", "ppo", "--level", "9-9", "--out", "{root}/new"], "unknown level '9-9'"),
    (
        "ppo-levels",
        ["baseline", "ppo", "--levels", "1-1", "4-1", "2-1", "--out", "{root}/new"],
        "--n-envs 8 does not deal evenly over 3 levels",
    ),
    ("ppo-init", ["baseline", "ppo", "--init-from", "{root}/none.zip", "--out", "{root}/new"], "no such file"),
    ("ppo-summary", ["baseline", "summary", "{root}/corpus", "--out", "{root}/new"], "is not a PPO run folder"),
    ("hof-missing", ["hof", "list", "{root}/nothing"], "has no hall of fame yet"),
    ("report-missing", ["report", "{root}/nothing"], "has no finished flywheel iteration"),
    ("push-player", ["push", "match", "--player", "bully"], "unknown push player 'bully'"),
    ("push-matches", ["push", "table", "--matches", "3"], "--matches must be an even number"),
    ("push-cost", ["push", "match", "--cost", "greedy"], "unknown push cost 'greedy'"),
    ("push-mode", ["push", "match", "--game.mode", "goal"], "matches need --game.mode match"),
    ("push-subcommand", ["push", "serve-all"], "unknown command 'push serve-all'"),
]


def _snapshot(root: Path) -> dict[str, str]:
    """Every file under root with a hash of its content."""
    return {str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """Every case run once (`run_cli_many`: 48 interpreter starts cost 3 minutes of the suite); and the fixture
    folder's files before and after all of them."""
    root = tmp_path_factory.mktemp("bad-input")
    corpus = write_corpus(root / "corpus", episodes=6, steps=30)
    damaged = write_corpus(root / "damaged", episodes=3, steps=30)
    first = sorted(damaged.glob("*.h5"))[0]
    first.write_bytes(first.read_bytes()[:2000])
    mixed = write_corpus(root / "mixed", episodes=2, steps=30)
    other = make_episode(np.random.default_rng(0), 30)
    other.meta.update(action_set="complex", seed=2, run_index=2)
    write_episode(mixed / "run-0001-00002.h5", other)
    (root / "empty").mkdir()
    (root / "afile").write_text("a file where a folder is expected")
    (root / "garbage.safetensors").write_bytes(b"\0" * 64)
    (root / "garbage.json").write_text("{ not json")
    train(replace(PRESETS["tiny"], corpus=corpus, out=root / "wm", steps=10, progress=False, tensorboard=False))
    scan(corpus), scan(damaged), scan(mixed)  # the index caches, as any earlier command leaves them
    before = _snapshot(root)
    # each case its own new folder: two at a time must not meet at one writer lock
    cases = {
        name: [a.replace("{root}/new", f"{{root}}/new-{name}").replace(ROOT, str(root)) for a in args]
        for name, args, _ in CASES
    }
    done = run_cli_many(cases, tmp_path_factory.mktemp("bad-input-logs"))
    return done, before, _snapshot(root)


@pytest.mark.parametrize("name,args,message", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_exit_2(results, name, args, message):
    r = results[0][name]
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2, r.stderr[-2000:]
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert lines[0].startswith("lemario") and ": error: " in lines[0] and message in lines[0], lines[0]


def test_bad_input_changes_nothing_already_written(results):
    """Every file there before is there after with the same content (a folder's .lock holds the pid of the last
    process that tried to write it, not data)."""
    _, before, after = results
    kept = {f: h for f, h in before.items() if not f.endswith(".lock")}
    assert {f: after.get(f) for f in kept} == kept


def test_usage_lists_every_command_apart_from_its_help():
    """`lemario --help` gives each command a line whose name stands at least two spaces from its help text."""
    from lemario.cli import COMMANDS, _usage

    lines = _usage().splitlines()
    for name, command in COMMANDS.items():
        (line,) = [line for line in lines if line.strip().startswith(name + " ") and line.endswith(command.help)]
        assert line[2 + len(name) : 4 + len(name)] == "  ", line


def test_an_interrupt_dropped_in_a_callback_is_delivered_again():
    """A Ctrl-C raised where Python can only print and drop it (a `__del__`; pymunk's cffi garbage-collection callback
    in `push data`, which once left an interrupted run going) still stops the command."""
    code = (
        "import signal, sys, time\n"
        "from lemario import cli\n"
        "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
        "sys.unraisablehook = cli._redeliver_interrupt  # as cli.main installs it\n"
        "class Dropped:\n"
        "    def __del__(self):\n"
        "        raise KeyboardInterrupt\n"
        "try:\n"
        "    Dropped()\n"
        "    time.sleep(0.5)\n"
        "    print('ran on')\n"
        "except KeyboardInterrupt:\n"
        "    print('stopped')\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=_cli_env())
    assert r.stdout.strip() == "stopped", r.stdout + r.stderr[-2000:]


def test_sigint_stops_a_command_started_with_sigint_ignored(tmp_path):
    """A script's background job starts with SIGINT ignored (POSIX shells without job control): `kill -INT` still
    stops it as Ctrl-C does, exit 130 and one line, with what it wrote kept."""
    out = tmp_path / "push"
    proc = subprocess.Popen(
        [sys.executable, "-m", "lemario.cli", "push", "data", "--out", str(out), "--episodes", "100000"]
        + ["--workers", "1", "--no-progress"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_cli_env(),
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    assert "writing" in proc.stdout.readline()  # parsed, handlers in place
    deadline = time.time() + 120
    while time.time() < deadline and not any(out.rglob("*.h5")):
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()  # a run that ignored it must not outlive the test
    assert proc.returncode == 130 and "interrupted" in err and len(err.strip().splitlines()) == 1, err
    assert any(out.rglob("*.h5"))
