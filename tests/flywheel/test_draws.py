"""`lemario study draws` on two tiny flywheel runs of one recipe (run seeds 1 and 2, one iteration each, the real
emulator): each run's pick evaluated on the study's seeds, the pooled figures against the episodes by hand, the resume,
and what it refuses."""

import json
import shutil

import numpy as np
import pytest

from lemario.core.runlog import read_rows

from conftest import run_cli, run_cli_many

TINY = ("flywheel", "--preset", "tiny", "--iterations", "1")


@pytest.fixture(scope="module")
def two_draws(tmp_path_factory):
    root = tmp_path_factory.mktemp("draws")
    runs = {f"seed{s}": root / f"run{s}" for s in (1, 2)}
    cases = {name: [*TINY, "--seed", name[4:], "--out", str(run)] for name, run in runs.items()}
    (root / "logs").mkdir()
    results = run_cli_many(cases, root / "logs")
    for r in results.values():
        assert r.returncode == 0, r.stderr[-3000:]
    return root, list(runs.values())


def _study(root, runs, *extra, out="study"):
    args = ("study", "draws", "--runs", *map(str, runs), "--episodes", "3", "--workers", "1", "--no-progress")
    return run_cli(*args, "--out", str(root / out), *extra)


def test_each_pick_on_fresh_seeds_pooled_over_the_draws(two_draws):
    root, runs = two_draws
    r = _study(root, runs)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "evaluate 2 picks x 3 episodes at seed offset 2000000" in r.stdout
    summary = json.loads((root / "study" / "draws.json").read_text())
    fresh = read_rows(root / "study" / "eval" / "episodes.jsonl")
    assert sorted({e["eval_seed"] for e in fresh}) == [12_000_000, 12_000_001, 12_000_002], "the study's own seeds"
    per_draw_x, per_draw_policies = [], []
    for run, draw in zip(runs, summary["draws"]):
        it = json.loads((run / "iter001" / "summary.json").read_text())
        assert draw["pick"] == f"policy:{run}/iter001/policies/s{it['best_seed']}/policy.safetensors"
        assert (
            draw["seed"] == int(run.name[3:])
            and draw["corpus_env_steps"] == it["corpus_frames"] - it["corpus_episodes"]
        )
        mine = [e for e in fresh if e["agent"] == draw["pick"]]
        per_draw_x.append(np.mean([e["max_x"] for e in mine]))
        assert draw["pick_fresh"] == {
            "episodes": 3,
            "mean_max_x": per_draw_x[-1],
            "flag_rate": np.mean([e["flag_get"] for e in mine]),
        }
        own = read_rows(run / "iter001" / "eval" / "episodes.jsonl")
        agents = sorted({e["agent"] for e in own})
        assert len(agents) == 2 and draw["pick_selection"]["mean_max_x"] == max(
            np.mean([e["max_x"] for e in own if e["agent"] == a]) for a in agents
        ), "the pick is the best of its K on the run's own evaluation"
        per_draw_policies.append(np.mean([np.mean([e["max_x"] for e in own if e["agent"] == a]) for a in agents]))
        assert draw["pick_confirmation"]["episodes"] == 2, "the tiny preset confirms on 2 episodes"
    pooled = summary["pooled"]
    assert pooled["pick_fresh"]["max_x"]["mean"] == pytest.approx(np.mean(per_draw_x))
    assert pooled["policies"]["max_x"]["mean"] == pytest.approx(np.mean(per_draw_policies))
    assert pooled["policies"]["policies"] == 4 and pooled["pick_fresh"]["policies"] == 2
    lo, hi = pooled["pick_fresh"]["max_x"]["ci95"]
    played = [e["max_x"] for e in fresh]
    assert min(played) <= lo <= np.mean(per_draw_x) <= hi <= max(played), "episodes are resampled too"
    assert "pick, fresh" in r.stdout and "its policies" in r.stdout
    again = _study(root, runs, "--iteration", "1")
    assert again.returncode == 0 and "evaluate" not in again.stdout, "a finished study resumes without playing"
    assert json.loads((root / "study" / "draws.json").read_text())["pooled"] == pooled
    changed = _study(root, runs, "--seed-offset", "3000000")
    assert changed.returncode == 2 and "seed_offset: 2000000 -> 3000000" in changed.stderr


def test_what_is_not_a_study_of_draws_is_one_clear_line(two_draws):
    root, runs = two_draws
    same_seed, other_recipe = root / "copy", root / "other"
    for folder in (same_seed, other_recipe):
        if not folder.exists():
            shutil.copytree(runs[0], folder)
    config = json.loads((other_recipe / "config.json").read_text())
    config["run_key"].update(k=3, seed=9)
    (other_recipe / "config.json").write_text(json.dumps(config))
    for runs_given, extra, message in (
        (runs[:1], (), "a study of draws takes two or more"),
        ([runs[0], runs[0]], (), "names a run twice"),
        ([runs[0], same_seed], (), "run seeds [1, 1] repeat"),
        ([runs[0], other_recipe], (), "differ in k: 2 -> 3: draws share their recipe"),
        (runs, ("--seed-offset", "499999"), "overlap the runs' own (500000..500001)"),
        (runs, ("--iteration", "2"), "has finished 1: pass runs that got there"),
    ):
        r = _study(root, runs_given, *extra, out="bad")
        assert r.returncode == 2 and message in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
