"""The PPO baseline: a tiny run through the CLI, checkpoint round trips, the RND state across save/load."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from lemario.baselines.milestones import record_milestones
from lemario.baselines.ppo import (
    PRESETS,
    drop_lost_rows,
    init_policy,
    load_run_state,
    make_vec_env,
    new_model,
    save_run_state,
)
from lemario.baselines.rnd import RND
from lemario.control.agents import PPOAgent
from lemario.core.errors import LemarioError
from lemario.games.mario.env import EnvConfig

from conftest import run_cli


def test_tiny_ppo_run_through_the_cli(tmp_path):
    out = tmp_path / "ppo"
    r = run_cli("baseline", "ppo", "--preset", "tiny", "--out", str(out), "--no-progress", timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    r = run_cli("status", str(out))
    assert r.returncode == 0 and f"PPO run {out}: 128 of 128 env steps" in r.stdout, r.stderr
    for name in (
        "latest.zip",
        "final.zip",
        "best_eval.zip",
        "final.vecnorm.json",
        "final.rnd.safetensors",
        "step_64.zip",
        "step_128.zip",
    ):
        assert (out / "checkpoints" / name).exists(), name
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert any("eval/mean_max_x" in r for r in rows)
    state = json.loads((out / "state.json").read_text())
    assert (
        state["env_steps"] >= 128 and state["best_eval"] >= 40 and state["first_eval_reached"] == {}
    )  # 60-step episodes
    assert state["elapsed"] > 0 and rows[-1]["time"] <= state["elapsed"]
    # re-running resumes from latest and, with the budget spent, trains no further; rows a killed run logged
    # past that checkpoint (here a made-up one, and a line the kill cut) go
    with open(out / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"env_steps": state["env_steps"] + 8, "episode/max_x": 99}) + "\n" + '{"env_st')
    r = run_cli("baseline", "ppo", "--preset", "tiny", "--out", str(out), "--no-progress", timeout=600)
    assert r.returncode == 0 and f"resuming {out} at {state['env_steps']} env steps" in r.stdout, r.stderr[-2000:]
    assert [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()] == rows
    # bookkeeping (budget, checkpoint cadence) may change between invocations; what the run learns may not
    r = run_cli(
        "baseline",
        "ppo",
        "--preset",
        "tiny",
        "--out",
        str(out),
        "--no-progress",
        "--gamma",
        "0.5",
        "--timesteps",
        "256",
    )
    assert r.returncode == 2 and "(gamma: 0.9 -> 0.5)" in r.stderr, r.stderr[-2000:]
    # evaluated with no env flags, a checkpoint plays its run's action set and frames
    agent, ev = f"ppo:{out / 'checkpoints' / 'final.zip'}", ("--episodes", "1", "--workers", "1", "--no-progress")
    r = run_cli("eval", agent, *ev, "--max-steps", "20", "--out", str(tmp_path / "ev"))
    assert r.returncode == 0 and "playing the action set the PPO policy chooses from: simple" in r.stdout, r.stderr
    r = run_cli("eval", agent, *ev, "--action-set", "right-only", "--out", str(tmp_path / "ev2"))
    assert r.returncode == 2 and "trained with the simple action set" in r.stderr and "--action-set simple" in r.stderr
    r = run_cli("eval", agent, *ev, "--crop-top", "32", "--out", str(tmp_path / "ev3"))
    assert r.returncode == 2 and "pass --crop-top 0 --pool" in r.stderr, r.stderr


def test_resume_drops_the_rows_of_the_lost_timeline(tmp_path):
    path = tmp_path / "metrics.jsonl"
    rows = [
        {"env_steps": 10, "episode/max_x": 300},
        {"env_steps": 16, "eval/mean_max_x": 500.0},
        {"env_steps": 20, "episode/max_x": 400},
        {"env_steps": 20, "eval/mean_max_x": 600.0},
        {"env_steps": 28, "episode/max_x": 700},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"env_steps": 3')
    drop_lost_rows(path, env_steps=20, next_eval=20)  # checkpoint at 20 with its evaluation still due
    assert [json.loads(x) for x in path.read_text().splitlines()] == rows[:3]
    drop_lost_rows(path, env_steps=20, next_eval=70)
    assert [json.loads(x) for x in path.read_text().splitlines()] == rows[:3]
    drop_lost_rows(tmp_path / "none.jsonl", 5, 5)  # a run killed before its first row


def test_milestones_keep_the_first_step_that_passed_them():
    reached = {}
    record_milestones(reached, 100, 650, False)
    assert reached == {}
    record_milestones(reached, 200, 1600, False)
    record_milestones(reached, 300, 2100, True)
    record_milestones(reached, 400, 3161, True)
    assert reached == {"700": 200, "1500": 200, "2000": 300, "flag": 300}


def test_checkpoint_load_same_actions(tmp_path):
    cfg = PRESETS["tiny"]
    venv, rnd = make_vec_env(cfg)
    try:
        from lemario.baselines.ppo import PPO

        model = PPO("CnnPolicy", venv, n_steps=32, batch_size=32, seed=0, device="cpu")
        obs = np.random.default_rng(0).integers(0, 255, (6, 4, 84, 84), dtype=np.uint8)
        before, _ = model.predict(obs, deterministic=True)
        save_run_state(model, venv, rnd, tmp_path / "ck")
        loaded = load_run_state(tmp_path / "ck", venv, rnd, "cpu")
        after, _ = loaded.predict(obs, deterministic=True)
        assert np.array_equal(before, after)
    finally:
        venv.close()
    simple = EnvConfig(action_set="simple")
    a, b = PPOAgent(tmp_path / "ck.zip", simple), PPOAgent(tmp_path / "ck.zip", simple)
    a.reset(3), b.reset(3)
    assert [a.act(o, {}) for o in obs] == [b.act(o, {}) for o in obs], "same seed, same sampled actions"
    with pytest.raises(LemarioError, match="7 actions, the env's complex set has 12: pass --action-set simple"):
        PPOAgent(tmp_path / "ck.zip", EnvConfig(action_set="complex"))  # index 5 would press other buttons


def test_rnd_state_survives_save_and_load(tmp_path):
    frames = np.random.default_rng(0).integers(0, 255, (16, 84, 84), dtype=np.uint8)
    rnd = RND(seed=1)
    for _ in range(5):
        rnd.bonus_and_update(frames)
    rnd.save(tmp_path / "rnd.safetensors")
    other = RND(seed=2)
    other.load(tmp_path / "rnd.safetensors")
    assert torch.equal(other.var, rnd.var) and other.count == rnd.count
    assert np.allclose(other.bonus_and_update(frames), rnd.bonus_and_update(frames))
    x = torch.from_numpy(frames).float()[:, None] / 255
    with torch.no_grad():
        assert other.error(x).mean() < RND(seed=1).error(x).mean(), "the restored predictor has learned these frames"


def test_a_two_level_run_started_from_another_runs_policy(tmp_path):
    """--levels deals the envs over the levels and evaluates on each; --init-from starts from a checkpoint's policy
    (issue 21's fine-tuning row); a changed level list is a one-line error on resume."""
    cfg = PRESETS["tiny"]
    venv, rnd = make_vec_env(replace(cfg, levels=("1-1", "4-1")))
    try:
        assert [c.level for c in venv.get_attr("config")] == ["1-1", "4-1"]
        source = new_model(replace(cfg, seed=7), venv, "cpu")
        save_run_state(source, venv, rnd, tmp_path / "source")
        fresh = new_model(cfg, venv, "cpu")
        init_policy(fresh, tmp_path / "source.zip")
        assert all(torch.equal(a, b) for a, b in zip(fresh.policy.parameters(), source.policy.parameters()))
    finally:
        venv.close()
    other = make_vec_env(replace(cfg, env=replace(cfg.env, action_set="complex"), n_envs=1, rnd_coef=0))[0]
    try:
        with pytest.raises(LemarioError, match="over 7 actions, this run's env gives .* over 12"):
            init_policy(
                new_model(replace(cfg, env=replace(cfg.env, action_set="complex")), other, "cpu"),
                tmp_path / "source.zip",
            )
    finally:
        other.close()

    out = tmp_path / "ppo"
    args = ["baseline", "ppo", "--preset", "tiny", "--out", str(out), "--no-progress", "--timesteps", "64"]
    r = run_cli(*args, "--levels", "1-1", "4-1", "--init-from", str(tmp_path / "source.zip"), timeout=600)
    assert r.returncode == 0 and "starting from the policy of" in r.stdout, r.stderr[-3000:]
    evals = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if "eval/mean_max_x" in x]
    assert evals and all(
        row["eval/mean_max_x"] == (row["eval/1-1/mean_max_x"] + row["eval/4-1/mean_max_x"]) / 2 for row in evals
    )  # one episode per level: the pooled mean is the mean of the level means
    stored = json.loads((out / "config.json").read_text())["config"]
    assert stored["levels"] == ["1-1", "4-1"] and stored["init_from"] == str(tmp_path / "source.zip")
    r = run_cli(*args, "--levels", "1-1", "2-1", "--init-from", str(tmp_path / "source.zip"))
    assert r.returncode == 2 and "levels" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr[-2000:]
