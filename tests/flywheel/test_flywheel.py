"""The flywheel end to end on the tiny preset: two full iterations on the real emulator, kill-and-resume, the
writer lock, the Ray executor on 2 local CPUs."""

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import replace

import pytest

from lemario.control.imagination import load_policy
from lemario.core.errors import LemarioError
from lemario.core.files import writer_lock
from lemario.data.corpus import read_meta, scan
from lemario.data.tiers import tier_of
from lemario.flywheel import hof
from lemario.flywheel import run as flywheel_run
from lemario.flywheel.config import PRESETS, policy_dir
from lemario.flywheel.detector import DetectorConfig
from lemario.flywheel.plan import plan_iteration
from lemario.flywheel.run import flywheel
from lemario.play.stats import format_ends, where_ends

from conftest import run_cli, run_cli_many
from synthetic import fake_ppo_run

TINY = ("flywheel", "--preset", "tiny")


def _catalog(run):
    """The catalog with the run folder's own path taken out (two runs live in two folders)."""
    return json.loads((run / "hof" / "catalog.json").read_text().replace(str(run), "RUN"))


def _corpus(run):
    return [
        (r["file"], r["n_steps"], r["max_x"], r["policy"].replace(str(run), "RUN"))
        for r in scan(run / "corpus").episodes
    ]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    run = tmp_path_factory.mktemp("fw") / "run"
    r = run_cli(*TINY, "--out", str(run), timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return run, r.stdout


def test_two_iterations_end_to_end(uninterrupted):
    run, stdout = uninterrupted
    cat = hof.catalog(run)
    assert sorted(e["iteration"] for e in cat) == [1, 2]
    state = json.loads((run / "state.json").read_text())
    assert state["status"] == "done" and state["iterations_done"] == 2
    assert "K-seed mean" in stdout and "[iter 2] collect 3 episodes: policy:" in stdout
    corpus = _corpus(run)
    last = state["iterations"][-1]
    assert last["env_steps"] == sum(n for _, n, *_ in corpus), "every step the corpus holds, explored ones too"
    played = [json.loads(line) for line in (run / "iter002" / "eval" / "episodes.jsonl").read_text().splitlines()]
    assert last["flags"] == [sum(e["flag_get"] for e in played), len(played)] and len(played) == 2 * 3, "K x episodes"
    assert f"{last['env_steps']:>9}  " in stdout.split("K-seed mean")[1], "the summary table's env-steps column"
    steps = json.loads((run / "iter002" / "summary.json").read_text())["world_model"]["steps"]
    table = stdout.split("K-seed mean")[1].splitlines()
    assert any(row.split()[:1] == ["2"] and row.endswith(f"  {steps}") for row in table), "its world model's steps"
    collected = [c for c in corpus if not c[0].startswith("explore/")]
    assert len(collected) == 6 + 3, "bootstrap episodes, then the iteration's own"
    assert {p for *_, p in collected[:6]} == {"biased"}
    first = "policy:RUN/hof/" + next(e["name"] for e in cat if e["iteration"] == 1) + "/policy.safetensors"
    assert [p for *_, p in collected[6:]] == [
        first,
        "policy:RUN/iter001/policies/s1001/policy.safetensors",
        first,
    ], "iteration 2 explores with the HOF best; its on-policy episode (1 of 3) is iteration 1's first policy's"
    assert "on-policy 0.5 by 2 policies of iteration 1)" in stdout
    # the exploration: one archive growing by --explore-steps per iteration, its episodes a sub-corpus trained on
    explored = [c for c in corpus if c[0].startswith("explore/")]
    archive = json.loads((run / "corpus" / "explore" / "archive" / "cells.json").read_text())
    assert archive["env_steps"] == sum(n for _, n, *_ in explored) >= 80, "every exploration step counted"
    chosen = [
        {f for f in json.loads((run / f"iter{n:03d}" / "selection.json").read_text()) if f.startswith("explore/")}
        for n in (1, 2)
    ]
    uncapped = {f for f, _, x, _ in explored if tier_of({"max_x": x}).max_frame_share is None}
    assert 0 < len(chosen[0]) < len(chosen[1]) and uncapped <= chosen[1], (
        "each iteration trains on the exploration so far (but what a tier's frame cap drops)"
    )
    explorers = {p for *_, p in explored}
    assert "biased" in explorers and any(p.startswith("policy:RUN/hof/iter1_") for p in explorers), (
        "--explorer.policy collector: iteration 2 explores with the HOF best"
    )
    for n in (1, 2):
        d = run / f"iter{n:03d}"
        s = json.loads((d / "summary.json").read_text())
        assert set(s["seed_scores"]) == {str(n * 1000 + 1), str(n * 1000 + 2)}, "policy seeds are iter*1000 + 1..K"
        assert s["decision"]["decision"] in ("commit", "branch", "halt") and "z" in s["decision"]
        assert {"collect", "explore", "train", "imagine", "eval"} <= set(s["timing"])
        assert s["exploration"]["env_steps"] >= 40 * n and s["exploration"]["cells"] > 0
        assert math.isfinite(s["probes"]["x_pos"]["linear"]["r2"]) and s["audit"]["selection"]
        for seed in s["seed_scores"]:
            assert (d / "policies" / f"s{seed}" / "policy.safetensors").exists()
    assert json.loads((run / "iter001" / "decision.json").read_text())["decision"] == "commit"
    plan2 = json.loads((run / "iter002" / "plan.json").read_text())
    assert plan2["init_from"].endswith("world_model.safetensors") and "hof/iter1_" in plan2["init_from"], (
        "warm start from the HOF"
    )
    # the warm-start model's progress error on the episodes iteration 2 collected (iteration 1 had no model)
    error = json.loads((run / "iter002" / "progress.json").read_text())
    assert (
        error["world_model"] == plan2["init_from"]
        and error["episodes"] == 3
        and not (run / "iter001" / "progress.json").exists()
    )
    groups = error["report"]["groups"]
    steps = sum(n for f, n, *_ in collected if f.startswith("iter002"))
    assert sum(g["steps"] for g in groups.values()) == steps, "every step (fewer than --progress-steps)"
    assert error["report"]["death"]["frames"] == steps, "the death foresight on the same steps"
    assert json.loads((run / "iter002" / "summary.json").read_text())["model_error"] == error["report"]
    assert "the warm-start model on them: blocked steps" in stdout
    # a hall-of-fame entry stands alone: its policy loads with the entry's own world model
    entry = hof.folder(run, cat[0])
    ac, model, meta = load_policy(entry / "policy.safetensors")
    assert meta["world_model"] == "world_model.safetensors" and model.cfg.latent_dim == ac.actor.net[0].in_features
    r = run_cli("hof", "list", str(run))
    assert r.returncode == 0 and cat[0]["name"] in r.stdout
    # re-running a finished run does nothing new
    r = run_cli(*TINY, "--out", str(run))
    assert r.returncode == 0 and "2 iterations finished" in r.stdout and _corpus(run) == corpus


def test_kills_then_resume_give_the_same_catalog(uninterrupted, tmp_path):
    reference, _ = uninterrupted
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "lemario.cli", *TINY, "--out", str(run)]
    # SIGKILL mid-training of iteration 1, mid-collection of iteration 2, then just after its policies
    for marker in ("iter001/wm/ckpt_latest.json", "iter002/plan.json", "iter002/policies"):
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.time() + 300
        while not (run / marker).exists() and p.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        assert p.poll() is None, f"the run ended before {marker} appeared"
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
    r = run_cli(*TINY, "--out", str(run), timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "resuming" in r.stdout
    assert _catalog(run) == _catalog(reference), "the resumed run's hall of fame equals the uninterrupted one's"
    assert _corpus(run) == _corpus(reference), "no episode lost or duplicated"


def test_a_second_writer_is_refused(tmp_path):
    run = tmp_path / "run"
    with writer_lock(run):
        r = run_cli(*TINY, "--out", str(run))
    assert r.returncode == 2 and "being written by another lemario process" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_a_different_config_on_the_same_folder_is_refused(uninterrupted):
    run, _ = uninterrupted
    r = run_cli(*TINY, "--out", str(run), "--k", "3")
    assert r.returncode == 2 and "another config" in r.stderr


BAD_INPUT = [
    (["--k", "1"], "at least 2 policies"),
    (["--executor", "slurm"], "unknown executor 'slurm'"),
    (["--level", "9-9"], "unknown level '9-9'"),
    (["--explore-steps", "-1"], "--explore-steps -1"),
    (["--explorer.cell", "pixel"], "unknown cell kind 'pixel'"),
    (["--levels", "1-1", "9-1"], "unknown level '9-1'"),
    (["--levels", "1-1", "1-1"], "names a level twice"),
    (["--detector.world-model-sd", "-5"], "--detector.world-model-sd -5.0: give the study's sd"),
    (["--detector.world-model-sd", "30", "--detector.variance", "v.json"], "both give the world-model component"),
    (["--detector.variance", "missing.json"], "is not a variance study's variance.json"),
    (["--detector.rule", "seeds"], "--detector.rule seeds decides on max_x alone"),
]


@pytest.fixture(scope="module")
def bad_input(tmp_path_factory) -> dict:
    """Every bad command line run once, each its own run folder (`run_cli_many`)."""
    root = tmp_path_factory.mktemp("bad-flywheel")
    cases = {str(i): [*TINY, "--out", str(root / f"run{i}"), *args] for i, (args, _) in enumerate(BAD_INPUT)}
    return run_cli_many(cases, tmp_path_factory.mktemp("bad-flywheel-logs"))


@pytest.mark.parametrize("case", range(len(BAD_INPUT)))
def test_bad_input_is_one_clear_line(bad_input, case):
    r, message = bad_input[str(case)], BAD_INPUT[case][1]
    assert r.returncode == 2 and message in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_the_world_model_component_from_a_study_file_or_its_sd(tmp_path):
    study = tmp_path / "variance.json"
    study.write_text(json.dumps({"components": {"world_model": {"variance": 900.0}}}))
    assert DetectorConfig(variance=study).world_model_var() == DetectorConfig(world_model_sd=30.0).world_model_var()
    assert DetectorConfig().world_model_var() is None, "unmeasured: the policy noise alone, and decisions say so"
    assert DetectorConfig(variance=study).world_model_var_high() is None, "a study file without an interval"
    study.write_text(json.dumps({"components": {"world_model": {"variance": 0.0, "ci95": [0.0, 149479.0]}}}))
    assert DetectorConfig(variance=study).world_model_var_high() == 149479.0
    assert DetectorConfig(world_model_sd=30.0).world_model_var_high() is None


def test_a_run_can_start_from_another_runs_best(uninterrupted, tmp_path):
    """--start-from (issue 21's fine-tuning): iteration 1 collects with the other run's best policy and warm-starts
    from its world model; from its own first entry on the run follows its own hall of fame."""
    run, _ = uninterrupted
    best = hof.folder(run, hof.top(run)[0])
    cfg = replace(PRESETS["tiny"], out=tmp_path / "ft", start_from=run, env=replace(PRESETS["tiny"].env, level="1-2"))
    cfg.validate()
    for start in (run, best):  # a flywheel folder means its best entry
        plan = plan_iteration(replace(cfg, start_from=start), 1, [])
        assert plan.collect_policy == f"policy:{best / 'policy.safetensors'}" and plan.hof_best is None
        assert plan.init_from == str(best / "world_model.safetensors") and plan.collect_episodes == cfg.episodes
        assert plan.policy_init is None, "fresh policies unless asked"
        warm = plan_iteration(replace(cfg, start_from=start, policy_warm_start=True), 1, [])
        assert warm.policy_init == str(best / "policy.safetensors")
    assert plan_iteration(replace(cfg, start_from=None), 1, []).collect_policy == "biased"
    with pytest.raises(LemarioError, match="differs in latent_dim"):
        replace(cfg, train=replace(cfg.train, model=replace(cfg.train.model, latent_dim=16))).validate()
    r = run_cli(*TINY, "--out", str(tmp_path / "bad"), "--start-from", str(tmp_path))
    assert r.returncode == 2 and "neither a hall-of-fame entry" in r.stderr


def test_a_fine_tuning_run_keeps_a_base_corpus_and_explores_before_the_ends(uninterrupted, tmp_path):
    """Issue 20's arms: --base-corpus links another corpus's episodes into RUN/corpus/base/ (the replay selection
    chooses among them from iteration 1); --explore-at-ends gives each explored episode one window before where the
    on-policy ones ended; --policy-warm-start trains the K policies on from the best entry's."""
    run, _ = uninterrupted
    out = tmp_path / "ft"
    args = ("--out", str(out), "--start-from", str(run), "--base-corpus", str(run / "corpus"), "--iterations", "1")
    r = run_cli(*TINY, *args, "--explore-at-ends", "2", "--policy-warm-start", timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    best = hof.folder(run, hof.top(run)[0])
    for sidecar in (out / "iter001").glob("**/policy.json"):  # the K policies continue the best entry's
        assert json.loads(sidecar.read_text())["train_config"]["init_from"] == str(best / "policy.safetensors")
    assert len(list((out / "iter001").glob("**/policy.json"))) == PRESETS["tiny"].k
    base = sorted(p.name for p in (run / "corpus").glob("*.h5"))
    assert sorted(p.name for p in (out / "corpus" / "base").glob("*.h5")) == base
    assert (out / "corpus" / "base" / base[0]).stat().st_ino == (run / "corpus" / base[0]).stat().st_ino, "linked"
    files = [r["file"] for r in scan(out / "corpus").episodes]  # what the replay selection chooses from
    assert [f for f in files if f.startswith("base/")] == [f"base/{f}" for f in base]
    metas = [read_meta(p) for p in sorted((out / "corpus").glob("iter001-*.h5"))]
    explored = [m for m in metas if m["explore"]]
    assert explored and all(len(m["explore_x"]) == 2 for m in explored), "one window an explored episode"
    assert all(m["explore_x"] == [] for m in metas if not m["explore"])
    assert "before their 2 commonest ends" in r.stdout
    r = run_cli(*TINY, "--out", str(tmp_path / "bad"), "--base-corpus", str(tmp_path / "nothing"))
    assert r.returncode == 2 and "--base-corpus" in r.stderr


def test_a_fork_starts_as_the_sources_iterations_then_goes_its_own_way(uninterrupted, tmp_path):
    run, _ = uninterrupted
    fork = tmp_path / "fork"
    args = ("--out", str(fork), "--fork-from", str(run), "--fork-after", "2", "--on-policy-by", "best")
    r = run_cli(*TINY, *args, "--iterations", "3", timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "differs in: iterations" not in r.stdout and "on_policy_by: last -> best" in r.stdout
    assert f"resuming {fork}:" not in r.stdout, "a new fork is not a resumed run"
    config = json.loads((fork / "config.json").read_text())
    assert config["forked_from"] == {"run": str(run), "iterations": 2, "differs": ["on_policy_by: last -> best"]}
    ours, theirs = fork / "iter002" / "wm" / "model.safetensors", run / "iter002" / "wm" / "model.safetensors"
    assert ours.stat().st_ino == theirs.stat().st_ino, "hard links, not copies"
    sidecar = json.loads((fork / "iter002" / "policies" / "s2001" / "policy.json").read_text())
    assert sidecar["world_model"] == str(ours), "the fork's policies name its own world models"
    assert json.loads((run / "iter002" / "policies" / "s2001" / "policy.json").read_text())["world_model"] == str(
        theirs
    ), "the source is not written"
    assert sorted(e["iteration"] for e in hof.catalog(fork)) == [1, 2, 3], "its own iteration 3 joins the source's"
    collected = [c for c in _corpus(fork) if c[0].startswith("iter")]
    source = [c[:3] for c in _corpus(run) if c[0].startswith("iter")]
    assert [c[:3] for c in collected[:9]] == source, "iterations 1-2's episodes"
    assert len(collected) == 12 and all(p.startswith("policy:RUN/hof/") for *_, p in collected[9:]), (
        "--on-policy-by best from then on"
    )
    assert json.loads((fork / "iter003" / "plan.json").read_text())["init_from"].startswith(str(fork / "hof"))
    r = run_cli(*TINY, *args, "--iterations", "3")
    assert r.returncode == 0 and "3 iterations finished" in r.stdout, "the same command resumes the fork"
    for extra, message in (
        (("--fork-after", "1"), "fork a run with --explore-steps only after"),
        (("--fork-after", "2", "--train.model.latent-dim", "16"), "must share its frames, levels and world model"),
        (("--fork-after", "3"), "has not finished iteration 3"),
        (("--fork-after", "0"), "a fork takes --fork-from RUN and --fork-after N >= 1"),
    ):
        r = run_cli(*TINY, "--out", str(tmp_path / "bad"), "--fork-from", str(run), *extra)
        assert r.returncode == 2 and message in r.stderr, r.stderr


def test_report_has_the_plots_tables_and_the_best_episode(uninterrupted):
    run, _ = uninterrupted
    r = run_cli("report", str(run), "--decoder-steps", "20")
    assert r.returncode == 0, r.stderr[-3000:]
    out = run / "report"
    for png in ("kseed.png", "hof.png", "tiers.png", "world_model.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"src='{png}'" in (out / "index.html").read_text()
    md = (out / "report.md").read_text()
    assert "## Detector decisions" in md and "| 2 |" in md and "between-seed sd" in md
    assert "| env steps | emulated (with evaluations) | exploration |" in md and "env steps, frontier x" in md
    blocked = json.loads((run / "iter002" / "progress.json").read_text())["report"]["groups"]["blocked"]["steps"]
    assert "| blocked steps (prev WM) |" in md
    assert any(line.startswith("| 1 |") and line.endswith("| - | - |") for line in md.splitlines()), "no model before"
    assert any(line.startswith("| 2 |") and f"| {blocked} |" in line for line in md.splitlines())
    played = [json.loads(line) for line in (run / "iter002" / "eval" / "episodes.jsonl").read_text().splitlines()]
    flags = sum(e["end"] == "flag" for e in played)
    assert (
        "## Where episodes end" in md
        and f"| 2 | {len(played)} | {flags} | {format_ends(where_ends(played), bins=3)} |" in md
    )
    # the video is the HOF best policy's furthest evaluation episode, replayed exactly
    entry = hof.folder(run, hof.top(run)[0])
    rows = [json.loads(line) for line in (entry / "eval" / "episodes.jsonl").read_text().splitlines()]
    rows = [row for row in rows if row["agent"] == hof.top(run)[0]["best_agent"]]
    chosen = json.loads((out / "render.json").read_text())["chosen"]
    assert chosen["max_x"] == max(row["max_x"] for row in rows) and (out / "best.mp4").stat().st_size > 1000
    assert "## Dreams" in md and (out / "dreams.png").exists() and (out / "dream_long.png").exists()
    trained_at = (out / "decoder.safetensors").stat().st_mtime
    assert run_cli("report", str(run), "--decoder-steps", "20").returncode == 0
    assert (out / "decoder.safetensors").stat().st_mtime == trained_at  # the same best entry: its decoder reused
    r = run_cli("report", str(run.parent / "nothing"))
    assert r.returncode == 2 and "no finished flywheel iteration" in r.stderr


def test_compare_puts_the_run_beside_ppo_at_equal_env_steps(uninterrupted, tmp_path):
    run, _ = uninterrupted
    s = [json.loads((run / f"iter{n:03d}" / "summary.json").read_text()) for n in (1, 2)]
    steps = [d["corpus_frames"] - d["corpus_episodes"] for d in s]
    ppo = fake_ppo_run(tmp_path / "ppo", 0, {}, {}, [(0, 100.0), (2 * steps[1], 300.0)])
    r = run_cli("compare", "--flywheel", str(run), "--ppo", str(ppo), "--out", str(tmp_path / "cmp"))
    assert r.returncode == 0, r.stderr[-3000:]
    md = (tmp_path / "cmp" / "compare.md").read_text()
    for n, d in enumerate(s, 1):
        se = d["k_sd"] / math.sqrt(len(d["seed_scores"]))
        ci = f"{d['k_mean']:.0f} [{d['k_mean'] - se:.0f}, {d['k_mean'] + se:.0f}]"
        ppo_at = 100 + 200 * steps[n - 1] / (2 * steps[1])  # PPO's line interpolated at the iteration's env steps
        assert (
            f"| {run.name} (seed 0) | {n} | {steps[n - 1]:,} | {ci} |" in md
            and f"| {ppo_at:.0f} | {ppo_at:.0f} |" in md
        )


def test_emulated_steps_add_every_evaluation_episode_played_to_the_corpus(uninterrupted, tmp_path):
    """The run's own play it picks and decides on (K policies' evaluations, the confirmation) counted from the
    episodes it wrote: in state.json, the closing table and, with --count-eval-play, `lemario compare`."""
    run, stdout = uninterrupted
    state = json.loads((run / "state.json").read_text())["iterations"]
    played = 0
    for n, it in enumerate(state, 1):
        for name in ("eval", "confirm"):
            rows = (run / f"iter{n:03d}" / name / "episodes.jsonl").read_text().splitlines()
            played += sum(json.loads(line)["steps"] for line in rows)
        assert it["emulated_steps"] == it["env_steps"] + played > it["env_steps"]
    table = stdout.split("K-seed mean")[1]
    assert f"{state[-1]['env_steps']:>9}  {state[-1]['emulated_steps']:>9}  " in table
    r = run_cli("compare", "--flywheel", str(run), "--count-eval-play", "--out", str(tmp_path / "cmp"))
    assert r.returncode == 0, r.stderr[-3000:]
    md = (tmp_path / "cmp" / "compare.md").read_text()
    assert "its evaluations' play included" in md
    assert all(f"| {run.name} (seed 0) | {n} | {it['emulated_steps']:,} |" in md for n, it in enumerate(state, 1))


def test_status_reads_a_run_as_it_stands(uninterrupted, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(uninterrupted[0], run)
    r = run_cli("status", str(run))
    assert r.returncode == 0 and "2 iterations finished (done)" in r.stdout and "K-seed mean" in r.stdout, r.stderr
    for done in ("summary.json", "decision.json"):  # iteration 2 as it stood before its evaluation finished
        (run / "iter002" / done).unlink()
    shutil.rmtree(run / "iter002" / "confirm")
    (run / "iter002" / "eval" / "summary.json").unlink()
    r = run_cli("status", str(run))
    assert r.returncode == 0, r.stderr
    assert "1 iterations finished" in r.stdout
    assert "iteration 2: collect 3/3, world model done, probe done, policies 2/2" in r.stdout


def test_a_detector_replayed_on_a_run_gives_back_its_own_decisions(uninterrupted, tmp_path):
    """`lemario study detector`: the run's own detector (the default) replayed on its scores decides as it did, both
    tests' z to the digit; on max_x alone it may differ, and says where."""
    run, _ = uninterrupted
    stored = [json.loads((run / f"iter{n:03d}" / "decision.json").read_text()) for n in (1, 2)]
    assert stored[1]["metric"] == "either" and set(stored[1]["flags"]) >= {"rate", "se", "z", "best_iteration"}
    r = run_cli("study", "detector", "--runs", str(run))
    assert r.returncode == 0, r.stderr
    rows = r.stdout.splitlines()[2:]
    for row, d in zip(rows, stored, strict=True):
        cells = row.split()
        assert cells[-4] == cells[-3] == d["decision"] and "first difference" not in row
        assert cells[-2:] == [f"{d['z']:.2f}", f"{d['flags']['z']:.2f}"]
    r = run_cli("study", "detector", "--runs", str(tmp_path))
    assert r.returncode == 2 and "has no finished flywheel iteration" in r.stderr, r.stderr


def test_a_halted_run_says_so_until_it_goes_on(uninterrupted, tmp_path, monkeypatch):
    run = tmp_path / "run"
    shutil.copytree(uninterrupted[0], run)
    summary = json.loads((run / "iter002" / "summary.json").read_text())
    summary["decision"]["decision"] = "halt"
    (run / "iter002" / "summary.json").write_text(json.dumps(summary))
    cfg = replace(PRESETS["tiny"], out=run, iterations=3, progress=False)
    assert len(flywheel(cfg)) == 2 and json.loads((run / "state.json").read_text())["status"] == "halted"
    said = []

    def iteration(cfg, n, summaries):  # what state.json says while iteration n runs
        said.append(json.loads((run / "state.json").read_text())["status"])
        return replace(summaries[-1], iteration=n)

    monkeypatch.setattr(flywheel_run, "run_iteration", iteration)
    assert len(flywheel(replace(cfg, continue_after_halt=True))) == 3
    assert said == ["running"] and json.loads((run / "state.json").read_text())["status"] == "done"


def test_a_resumed_iteration_keeps_the_policy_its_confirmation_played(uninterrupted, tmp_path):
    """The best of K is picked once: an iteration resumed after its confirmation, by code (here: scores) that would
    pick another policy, keeps the confirmed one instead of asking the confirmation for a policy it never played."""
    run = tmp_path / "run"
    shutil.copytree(uninterrupted[0], run)
    (run / "iter002" / "summary.json").unlink()
    for name in ("eval", "confirm"):  # the copy's evaluations name the copy's policies
        path = run / "iter002" / name / "summary.json"
        path.write_text(path.read_text().replace(str(uninterrupted[0]), str(run)))
    confirmed = next(iter(json.loads((run / "iter002" / "confirm" / "summary.json").read_text())["per_agent"]))
    path = run / "iter002" / "eval" / "summary.json"
    scores = json.loads(path.read_text())
    other = next(spec for spec in scores["per_agent"] if spec != confirmed)
    scores["per_agent"][other] |= {"mean_max_x": 1e6, "flag_rate": 1.0}
    path.write_text(json.dumps(scores))
    summaries = flywheel(replace(PRESETS["tiny"], out=run, iterations=2, progress=False))
    best = policy_dir(run / "iter002", summaries[1].best_world_model, summaries[1].best_seed)
    assert f"policy:{best / 'policy.safetensors'}" == confirmed != other


def test_an_iteration_of_two_world_models_and_a_measured_world_model_variance(tmp_path):
    """W = 2 world models x K = 2 policies: all four evaluated, the sd pooled within world models, the standard
    error counting both W and a study's world-model component; the hall of fame keeps the best policy's own
    world model."""
    run, study = tmp_path / "run", tmp_path / "variance.json"
    study.write_text(json.dumps({"components": {"world_model": {"variance": 900.0}}}))
    args = ("--out", str(run), "--iterations", "1", "--world-models", "2", "--bootstrap-episodes", "3")
    r = run_cli(*TINY, *args, "--detector.variance", str(study), "--workers", "2", timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    d = run / "iter001"
    s = json.loads((d / "summary.json").read_text())
    assert set(s["seed_scores"]) == {"1001", "1002", "w1-1001", "w1-1002"}
    assert (d / "wm" / "model.safetensors").exists() and (d / "wm1" / "model.safetensors").exists()
    assert (d / "policies" / "w1-s1002" / "policy.safetensors").exists()
    means = {k: v["mean_max_x"] for k, v in s["seed_scores"].items()}
    within = math.sqrt(((means["1001"] - means["1002"]) ** 2 + (means["w1-1001"] - means["w1-1002"]) ** 2) / 4)
    assert s["k_sd"] == pytest.approx(within)
    dec = s["decision"]
    assert dec["rule"] == "welch" and dec["world_models"] == 2 and dec["world_model_var"] == 900.0
    assert dec["se"] == pytest.approx(math.sqrt(900.0 / 2 + within**2 / 4))
    best = max(means, key=means.get)
    assert s["best_world_model"] == (1 if best.startswith("w1-") else 0)
    entry = hof.folder(run, hof.catalog(run)[0])
    wm = d / ("wm1" if s["best_world_model"] else "wm") / "model.safetensors"
    assert (entry / "world_model.safetensors").read_bytes() == wm.read_bytes()


def test_a_two_level_run_end_to_end(tmp_path):
    """--levels 1-1 4-1: each level's collection and exploration a sub-corpus of its own, the replay selection level
    by level, training and imagination balanced across levels, every evaluation on both levels (the iteration's
    score pooling them), the report's per-level table; a re-run keeps the list, a changed list is refused."""
    run, levels = tmp_path / "run", ("1-1", "4-1")
    args = (*TINY, "--out", str(run), "--iterations", "1", "--levels", *levels)
    r = run_cli(*args, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    corpus = scan(run / "corpus").episodes
    folders = Counter(e["file"].split("/")[0] for e in corpus)
    assert folders["1-1"] == folders["4-1"] == 6, "--bootstrap-episodes per level"
    assert folders["explore-1-1"] > 0 and folders["explore-4-1"] > 0 and len(folders) == 4
    assert all(e["level"] == e["file"].split("/")[0].removeprefix("explore-") for e in corpus)
    selection = json.loads((run / "iter001" / "selection.json").read_text())
    assert {f.split("/")[0].removeprefix("explore-") for f in selection} == set(levels)
    assert json.loads((run / "iter001" / "wm" / "config.json").read_text())["config"]["balance_levels"] is True
    policy = json.loads((run / "iter001" / "policies" / "s1001" / "policy.json").read_text())
    assert policy["train_config"]["balance_levels"] is True
    s = json.loads((run / "iter001" / "summary.json").read_text())
    assert set(s["level_scores"]) == set(levels) and set(s["exploration"]["levels"]) == set(levels)
    for label, agg in s["seed_scores"].items():
        assert agg["episodes"] == 2 * 3, "--eval-episodes on each level"
        level_means = [s["level_scores"][lv][label]["mean_max_x"] for lv in levels]
        assert agg["mean_max_x"] == pytest.approx(sum(level_means) / 2)
    assert json.loads((run / "iter001" / "confirm" / "summary.json").read_text())["per_level"].keys() == set(levels)
    r = run_cli(*args)
    assert r.returncode == 0 and "1 iterations finished" in r.stdout
    r = run_cli(*TINY, "--out", str(run), "--iterations", "1", "--levels", "1-1")
    assert r.returncode == 2 and "another config" in r.stderr and "levels" in r.stderr
    r = run_cli("report", str(run), "--no-video")
    assert r.returncode == 0, r.stderr[-3000:]
    md = (run / "report" / "report.md").read_text()
    assert "## Per level" in md and "| iter | 1-1 | 4-1 |" in md and "biased random" in md
    assert (run / "report" / "levels.png").read_bytes()[:4] == b"\x89PNG"
