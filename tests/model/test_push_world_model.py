"""The world-model library on the push game: RGB frames, continuous thrusts, the state head, a start from context."""

import importlib.util
import json
import shutil
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from lemario.control.gaussian_cem import GaussianCEMConfig
from lemario.control.push_players import LatentPlanner
from lemario.core.device import to_torch
from lemario.core.errors import LemarioError
from lemario.core.executor import torch_threads
from lemario.core.runconfig import as_json, with_defaults
from lemario.data.buffer import EpisodeBuffer
from lemario.games.push.board import MOVED, STATE_DIM, head_positions, head_state, head_targets, random_start
from lemario.games.push.env import PushConfig, PushGame
from lemario.games.push.opponents import chase_t
from lemario.model.diagnose import DiagnoseConfig, diagnose, diagnose_main, thrust_response
from lemario.model.loss import LossConfig, world_model_loss
from lemario.model.train import PRESETS, TrainConfig, train
from lemario.model.world_model import WorldModel, load_world_model
from lemario.play.push_data import PushDataConfig, generate
from lemario.play.push_goal import goal_task
from lemario.play.push_match import MODEL, PlayConfig, match_row

from conftest import run_cli

TINY = PRESETS["push-tiny"]
PLAIN = replace(TINY.model, residual=False)
"""The push preset's model is residual (its predictor starts as "no change"): the AdaLN-zero tests take the plain
predictor, whose output is the transformer's own."""


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("push") / "data"
    generate(PushDataConfig(out=out, episodes=12, turns=2, workers=1, progress=False))
    return out


def test_head_targets_round_trip():
    states = np.stack([random_start(np.random.default_rng(i)) for i in range(5)])  # (5, 14)
    targets = head_targets(states)
    assert targets.shape == (5, 8) and np.abs(targets).max() <= 1 + 1e-6
    positions = head_positions(targets)  # (5, 3, 2)
    assert np.allclose(positions[:, 0], states[:, 0:2], atol=1e-3)
    assert np.allclose(positions[:, 2], states[:, 8:10], atol=1e-3)
    assert np.allclose(np.arctan2(targets[:, 7], targets[:, 6]), states[:, 10], atol=1e-5)
    assert np.allclose(head_positions(torch.tensor(targets)).numpy(), positions)  # torch alike


def test_buffer_samples_push_windows(corpus):
    buffer = EpisodeBuffer.load(corpus)
    assert buffer.game == "push" and buffer.actions.shape[1] == 4 and buffer.labels.shape[1] == STATE_DIM
    batch = buffer.sample(5, 4, 1, np.random.default_rng(0))
    assert batch["obs"].shape == (5, 5, 1, 64, 64, 3) and batch["actions"].shape == (5, 4, 4)
    assert batch["state"].shape == (5, 5, 8) and batch["prev"].shape == (5, 4)
    assert np.allclose(batch["state"], head_targets(batch["labels"]))
    first = buffer.starts[1]  # the thrust before an episode's first frame is none
    assert not buffer.prev_actions(np.array([first])).any()
    assert np.array_equal(buffer.prev_actions(np.array([first + 3])), buffer.actions[[first + 2]])


@pytest.mark.parametrize("context", [1, 3])
def test_loss_with_continuous_actions_and_the_state_head(corpus, context):
    torch.manual_seed(0)
    model = WorldModel(PLAIN)
    batch = to_torch(EpisodeBuffer.load(corpus).sample(4, 4, 1, np.random.default_rng(1)), torch.device("cpu"))
    loss, metrics = world_model_loss(model, batch, LossConfig(context=context, sigreg_projections=16))
    loss.backward()
    assert torch.isfinite(loss) and {"loss/state", "loss/state_predicted"} <= set(metrics)
    assert "loss/reward" not in metrics
    grads = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert any(n.startswith("encoder.") for n in grads) and any(n.startswith("state_head.") for n in grads)
    assert "predictor.blocks.0.modulation.1.weight" in grads  # the thrust's condition learns (AdaLN-zero at init)


def test_motion_loss_scores_a_head_that_reads_no_motion_at_one_per_moving_dimension(corpus):
    """A state head that reads the same state off every latent reads no displacement: each state dimension then
    scores its real displacements' mean square over itself, 1, and a dimension that never moved in the batch 0; off
    by default. A head that reads the true state plus a constant would score 0 (its displacements are exact)."""
    torch.manual_seed(0)
    model = WorldModel(PLAIN)
    batch = to_torch(EpisodeBuffer.load(corpus).sample(8, 4, 1, np.random.default_rng(1)), torch.device("cpu"))
    assert "loss/motion" not in world_model_loss(model, batch, LossConfig(context=3, sigreg_projections=16))[1]
    last = model.state_head[-1]
    torch.nn.init.zeros_(last.weight)
    torch.nn.init.constant_(last.bias, 0.3)
    cfg = LossConfig(context=3, sigreg_projections=16, motion_weight=2.0)
    loss, metrics = world_model_loss(model, batch, cfg, torch.Generator().manual_seed(5))
    moved = (batch["state"][:, 3:] != batch["state"][:, 2:3]).any(dim=1).any(dim=0)  # (8,) dimensions that moved
    assert 0 < moved.sum() and metrics["loss/motion"] == pytest.approx(moved.float().mean().item(), rel=1e-5)
    assert metrics["loss/motion_predicted"] == pytest.approx(metrics["loss/motion"], rel=1e-6)
    without, _ = world_model_loss(model, batch, replace(cfg, motion_weight=0.0), torch.Generator().manual_seed(5))
    assert loss.item() == pytest.approx(without.item() + 2 * 2 * metrics["loss/motion"], rel=1e-5)


def test_teacher_forced_windows_match_direct_predictions_with_thrusts():
    torch.manual_seed(0)
    model = WorldModel(PLAIN).eval()
    for block in model.predictor.blocks:  # AdaLN-zero starts with the action as a no-op: wake it
        torch.nn.init.normal_(block.modulation[1].weight, std=0.1)
    emb, actions = torch.randn(2, 7, 32), torch.rand(2, 6, 4) * 2 - 1
    tf = model.teacher_forced(emb, actions, torch.zeros(2, 4))
    for t in range(6):
        lo = max(0, t - model.history + 1)
        direct = model.predict(emb[:, lo : t + 1], actions[:, lo : t + 1], torch.zeros(2, 4))[:, -1]
        assert torch.allclose(tf[:, t], direct, atol=1e-5)
    other = actions.clone()
    other[:, 2] = -other[:, 2]
    changed = (model.teacher_forced(emb, other, torch.zeros(2, 4)) - tf).abs().amax(dim=(0, 2)) > 1e-6
    assert changed.tolist() == [False, False, True, True, True, False]  # the thrust at 2 reaches 3 windows


def test_diagnostics_predict_from_the_whole_history(corpus):
    """A residual model at init is exactly "no change": the one step diagnosed must be the newest real latent of a
    3-latent history carried to the next (the push model trains from 3 and was never asked to predict from 1)."""
    torch.manual_seed(0)
    model = WorldModel(TINY.model)
    batch = to_torch(EpisodeBuffer.load(corpus).sample(32, 4, 1, np.random.default_rng(2)), torch.device("cpu"))
    metrics, _ = diagnose(model, batch)
    with torch.no_grad():
        emb = model.eval().encode(batch["obs"])  # (32, 5, D)
    still = torch.nn.functional.mse_loss(emb[:, 2], emb[:, 3]).item()
    assert model.history == 3 and metrics["diag/pred_mse"] == pytest.approx(still, rel=1e-5)
    assert metrics["diag/no_change_mse"] == pytest.approx(still, rel=1e-5)
    assert metrics["diag/pred_mse"] != pytest.approx(torch.nn.functional.mse_loss(emb[:, 0], emb[:, 1]).item())


def test_thrust_response_is_the_same_twice_for_a_model_that_ignores_the_thrust(corpus):
    """AdaLN-zero at init: the thrust conditions nothing, so the rollout given the thrusts played and given none
    are the same rollout; woken, they differ. The real motion is the discs' (and the T's) displacement in the
    windows' states."""
    torch.manual_seed(0)
    model = WorldModel(PLAIN)
    batch = to_torch(EpisodeBuffer.load(corpus).sample(32, 5, 1, np.random.default_rng(3)), torch.device("cpu"))
    asleep = thrust_response(model, batch)
    assert asleep["thrust/r2_given"] == asleep["thrust/r2_zeroed"] and asleep["thrust/steps"] == 3
    discs = head_positions(batch["state"])[:, :, :2]  # (32, 6, 2, 2)
    assert asleep["thrust/real_motion"] == pytest.approx((discs[:, -1] - discs[:, 2]).norm(dim=-1).mean().item())
    for block in model.predictor.blocks:
        torch.nn.init.normal_(block.modulation[1].weight, std=0.1)
    awake = thrust_response(model, batch)
    assert awake["thrust/r2_given"] != pytest.approx(awake["thrust/r2_zeroed"])
    # a residual model at init imagines no motion at all: R² is then 1 - sum(real²) / sum((real - its mean)²)
    still = thrust_response(WorldModel(TINY.model), batch)
    real = discs[:, -1] - discs[:, 2]  # (32, 2, 2)
    expected = 1 - real.square().sum() / (real - real.mean(0)).square().sum()
    assert still["thrust/r2_given"] == pytest.approx(expected.item(), rel=1e-4) == still["thrust/r2_zeroed"]
    # the same for the T, scored on its own: held still it leaves R² nothing to explain (NaN); pushed in the windows'
    # last states, it is scored as the discs are
    held = {**batch, "state": batch["state"].clone()}
    held["state"][:, :, 4:6] = held["state"][:, :1, 4:6]
    assert np.isnan(thrust_response(WorldModel(TINY.model), held)["thrust/t_r2_given"])
    pushed = {**batch, "state": batch["state"].clone()}
    pushed["state"][:, -1, 4:6] += 0.05 * torch.randn(32, 2, generator=torch.Generator().manual_seed(4))
    t = head_positions(pushed["state"])[:, :, 2]  # (32, 6, 2)
    real_t = t[:, -1] - t[:, 2]
    asleep_t = thrust_response(WorldModel(PLAIN), pushed)
    assert asleep_t["thrust/t_real_motion"] == pytest.approx(real_t.norm(dim=-1).mean().item())
    assert asleep_t["thrust/t_r2_given"] == asleep_t["thrust/t_r2_zeroed"]
    tiny = WorldModel(TINY.model)
    still_t = thrust_response(tiny, pushed)
    expected_t = 1 - real_t.square().sum() / (real_t - real_t.mean(0)).square().sum()
    assert still_t["thrust/t_r2_given"] == pytest.approx(expected_t.item(), rel=1e-4) == still_t["thrust/t_r2_zeroed"]
    # on the windows where the T moved over a pixel, scored alone; and what the head reads off the last real frame
    moving = real_t.norm(dim=-1) > MOVED
    assert 0 < still_t["thrust/t_moving"] == moving.sum() < 32
    real_m = real_t[moving]
    expected_m = 1 - real_m.square().sum() / (real_m - real_m.mean(0)).square().sum()
    assert still_t["thrust/t_r2_given_moving"] == pytest.approx(expected_m.item(), rel=1e-4)
    with torch.no_grad():
        emb = tiny.eval().encode(pushed["obs"])
        seen = head_positions(tiny.decode_state(emb[:, -1]))[:, 2] - head_positions(tiny.decode_state(emb[:, 2]))[:, 2]
    expected_seen = 1 - (seen - real_t).square().sum() / (real_t - real_t.mean(0)).square().sum()
    assert still_t["thrust/t_r2_seen"] == pytest.approx(expected_seen.item(), rel=1e-4)


@pytest.fixture(scope="module")
def trained(corpus, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("push-wm") / "wm"
    val = train(replace(TINY, corpus=corpus, out=out, steps=20, progress=False, tensorboard=False))
    assert np.isfinite(val["val/loss/state"])
    return out / "model.safetensors"


def test_push_model_trains_saves_and_reloads(corpus, trained):
    model, meta = load_world_model(trained)
    assert model.cfg.continuous_actions and model.cfg.state_head == 8 and not hasattr(model, "reward_head")
    obs = torch.as_tensor(EpisodeBuffer.load(corpus).frames[:3])[:, None]  # (3, 1, 64, 64, 3)
    assert model.decode_state(model.encode(obs)).shape == (3, 8)


def test_a_model_for_the_other_game_is_refused(corpus, tmp_path):
    r = run_cli("train", "--preset", "tiny", "--corpus", str(corpus), "--out", str(tmp_path / "wm"))
    assert r.returncode == 2 and "use --preset push" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    with pytest.raises(LemarioError, match="continuous"):
        WorldModel(replace(TINY.model, prev_action=True))


def test_latent_planner_plans_from_frames_and_keeps_its_dream_field(trained):
    model, _ = load_world_model(trained)
    planner = LatentPlanner(model, cfg=GaussianCEMConfig(samples=16, iterations=3), seed=0)
    env = PushGame()
    env.reset(seed=1)
    for _ in range(7):  # amber's turn, then two of cyan's steps: cyan plans from 3 frames and the thrusts between
        env.step(planner(env.seen()))
    assert len(planner.t_paths) == 3 and planner.t_paths[0].shape == (16, 5, 2)
    assert planner.last.history[0].actions.shape == (16, 5, 2) and planner.seconds > 0
    with pytest.raises(LemarioError, match="push world model"):
        LatentPlanner(WorldModel(PRESETS["tiny"].model))


def test_the_latent_planners_cost_computes_no_gradients_whatever_its_caller_holds(trained):
    planner = LatentPlanner(load_world_model(trained)[0])
    env = PushGame()
    env.reset(seed=1)
    cost = planner.costs(env.seen())[0]  # returned from a no_grad method, called here with gradients on
    assert torch.is_grad_enabled()
    out = cost(torch.zeros(4, 5, 2))
    assert out.shape == (4,) and not out.requires_grad and not planner.ends.requires_grad


def test_a_model_reads_frames_of_its_own_size_whatever_the_game_renders():
    torch.manual_seed(0)
    model = WorldModel(replace(TINY.model, image_size=96, vit_patch=12)).eval()  # 64 tokens, as the 64-px model's
    planner = LatentPlanner(model, cfg=GaussianCEMConfig(samples=4, iterations=1), seed=0, warm="chase_t")
    env = PushGame()  # renders 64 px
    env.reset(seed=2)
    env.step(planner(env.seen()))
    seen = env.seen()
    z = model.encode(torch.as_tensor(seen.frames_at(96)[:1])[:, None])  # (1, D) the first frame at 96 px
    with torch.no_grad():
        turn = planner.rule_turn([z[None]], torch.zeros(1, 0, 4), 0, 5)
    assert torch.allclose(planner.last.history[0].actions[0], turn, atol=1e-4)  # planned from the 96-px frame


def test_a_subpixel_model_reads_subpixel_frames_whatever_the_game_draws():
    torch.manual_seed(0)
    model = WorldModel(replace(TINY.model, subpixel=True)).eval()
    planner = LatentPlanner(model, cfg=GaussianCEMConfig(samples=4, iterations=1), seed=0, warm="chase_t")
    env = PushGame()  # draws rounded frames
    env.reset(seed=2)
    for _ in range(3):
        env.step(np.array([0.7, 0.3]))
    seen = env.seen()
    contexts = planner.costs(seen)[1]
    with torch.no_grad():
        fine, rounded = (model.encode(torch.as_tensor(f)[:, None]) for f in (seen.frames_at(64, True), seen.frames))
    assert torch.allclose(contexts[0][0], fine, atol=1e-5) and not torch.allclose(contexts[0][0], rounded, atol=1e-5)


def test_a_warm_started_latent_planner_plays_the_rule_in_the_model(trained):
    model, _ = load_world_model(trained)
    planner = LatentPlanner(model, cfg=GaussianCEMConfig(samples=8, iterations=1), seed=0, warm="chase_t")
    env = PushGame()
    env.reset(seed=3)
    env.step(planner(env.seen()))
    first = env.seen().frames  # amber's first frame (the context of its plan)
    z = model.encode(torch.as_tensor(first[:1])[:, None])  # (1, D)
    with torch.no_grad():
        turn = planner.rule_turn([z[None]], torch.zeros(1, 0, 4), 0, 5)  # (5, 2)
        want = chase_t(head_state(model.decode_state(z)[0].numpy()), 0)  # the rule on the board the head reads
    assert turn.shape == (5, 2) and np.allclose(turn[0].numpy(), want, atol=1e-6)
    assert torch.allclose(planner.last.history[0].actions[0], turn, atol=1e-4)  # CEM's first sample is the rule's turn


def test_an_ensemble_reads_the_board_as_the_mean_of_its_models_readings(trained):
    model, _ = load_world_model(trained)
    torch.manual_seed(1)
    other = WorldModel(model.cfg).eval()  # another "seed": its own latent space, its own reading
    env = PushGame()
    env.reset(seed=3)
    seen = env.seen()
    one, pair, twice = (
        LatentPlanner(m, cfg=GaussianCEMConfig(samples=1, iterations=1), warm="chase_t")
        for m in (model, [model, other], [model, model])
    )
    with torch.no_grad():
        zs = [m.encode(torch.as_tensor(seen.frames)[:, None]) for m in (model, other)]  # each (1, D)
        want = (model.decode_state(zs[0]) + other.decode_state(zs[1])) / 2
        turn = pair.rule_turn([z[None] for z in zs], torch.zeros(1, 0, 4), 0, 5)
    assert torch.allclose(pair.read(zs), want)
    assert np.allclose(turn[0].numpy(), chase_t(head_state(want[0].numpy()), 0), atol=1e-6)  # the rule on the mean
    assert np.allclose(twice(seen), one(seen))  # two copies of one model play as that model
    with pytest.raises(LemarioError, match="an ensemble plays a board cost"):
        LatentPlanner([model, other], cost="latent")


def test_a_replanning_latent_planner_plans_each_steps_rest_from_the_real_frames(trained):
    model, _ = load_world_model(trained)
    planner = LatentPlanner(model, cfg=GaussianCEMConfig(samples=8, iterations=2), seed=0, warm="chase_t", replan=True)
    plan, horizons, spent = planner.plan, [], []
    planner.plan = lambda seen, h, rest: horizons.append((h, seen.frames.shape[0])) or plan(seen, h, rest)
    env = PushGame()
    env.reset(seed=3)
    for _ in range(5):
        env.step(planner(env.seen()))
        spent.append(planner.seconds)
    assert horizons == [(5, 1), (4, 2), (3, 3), (2, 3), (1, 3)]  # the turn's rest, from up to 3 real frames
    assert planner.t_paths[0].shape == (8, 5, 2) and planner.last.history[0].actions.shape == (8, 5, 2)  # the first
    assert spent == sorted(spent) and spent[-1] > spent[0]  # the turn's planning time adds the replans


def test_the_latent_match_cost_plans_toward_a_picture_of_winning(trained):
    model, _ = load_world_model(trained)
    planner = LatentPlanner(model, cfg=GaussianCEMConfig(samples=16, iterations=2), cost="latent")
    env = PushGame()
    env.reset(seed=2)
    env.step(planner(env.seen()))
    assert np.isfinite(planner.last.cost) and planner.last.cost >= 0
    z = model.encode(torch.as_tensor(env.seen().frames[-1:])[:, None])[0]
    assert planner.match_goal(z, 0).shape == (model.cfg.latent_dim,)
    assert not torch.allclose(planner.match_goal(z, 0), planner.match_goal(z, 1))  # each side's own picture
    with pytest.raises(LemarioError, match="unknown push cost"):
        LatentPlanner(model, cost="greedy")


def test_model_player_through_the_cli(trained, tmp_path):
    twin = tmp_path / "twin" / "model.safetensors"  # a second "seed": the same weights under another name
    twin.parent.mkdir()
    for suffix in (".safetensors", ".json"):
        shutil.copy(trained.with_suffix(suffix), twin.with_suffix(suffix))
    r = run_cli("push", "match", "--player", f"model:{trained}", f"model:{twin}", "--opponent", "passive",
                "--matches", "2", "--cem.samples", "16", "--cem.iterations", "2", "--out", str(tmp_path))  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    assert "2 seeds vs passive" in r.stdout
    result = json.loads((tmp_path / "matches.json").read_text())
    assert result["git_commit"] and "lemario_version" in result
    assert result["summaries"]["passive"]["matches"] == 4 and len(result["per_player"]["passive"]) == 2
    twins = list(result["per_player"]["passive"].values())
    assert twins[0]["win_rate"] == twins[1]["win_rate"]  # same weights, same seeds: the same matches
    bad = run_cli("push", "match", "--player", f"model:{tmp_path}/none.safetensors")
    assert bad.returncode == 2 and "no world model at" in bad.stderr
    pair = run_cli("push", "match", "--player", f"model:{trained},{twin}", "--opponent", "passive", "--matches", "2",
                   "--cem.samples", "16", "--cem.iterations", "2", "--out", str(tmp_path / "pair"))  # fmt: skip
    assert pair.returncode == 0, pair.stderr[-2000:]
    ensemble = json.loads((tmp_path / "pair" / "matches.json").read_text())["summaries"]["passive"]
    assert ensemble["matches"] == 2 and ensemble["win_rate"] == twins[0]["win_rate"]  # twins read as one
    bad = run_cli("push", "match", "--player", f"model:{trained},{tmp_path}/none.safetensors")
    assert bad.returncode == 2 and "none.safetensors" in bad.stderr
    bad = run_cli("push", "match", "--player", f"model:{trained},{twin}", "--cost", "latent")
    assert bad.returncode == 2 and "an ensemble plays --cost approach or seed" in bad.stderr


def test_fidelity_of_two_identical_models_and_their_ensemble(trained, tmp_path):
    twin = tmp_path / "twin" / "model.safetensors"
    twin.parent.mkdir()
    for suffix in (".safetensors", ".json"):
        shutil.copy(trained.with_suffix(suffix), twin.with_suffix(suffix))
    r = run_cli("push", "fidelity", str(trained), str(twin), "--positions", "4", "--samples", "12", "--widths", "0.3",
                "--out", str(tmp_path))  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    result = json.loads((tmp_path / "fidelity.json").read_text())
    s = result["summary"]
    assert s["0.3 simulator"]["rho"] == pytest.approx(1.0) and s["0.3 simulator"]["regret"] == 0.0
    assert s["0.3 simulator"]["gain"] >= max(s["0.3 model 0"]["gain"], 0.0)  # no pick beats the true best
    assert s["0.3 model 0"]["disc_r2"] <= 1.0 and "disc_r2" not in s["0.3 simulator"]
    assert s["0.3 model 1"] == s["0.3 model 0"]  # the same weights: the same judgement
    assert {"0.3 model 0: changes", "0.3 model 0: start"} <= s.keys()  # the model's cost split by its two errors
    split = [s["0.3 simulator"][k] for k in ("rho_contact", "rho_free")]  # by whether the candidates move the T
    assert [v for v in split if not np.isnan(v)] == pytest.approx([1.0] * (2 - int(np.isnan(split).sum())))
    assert not np.isnan(split).all()  # some positions fall on one side or the other
    for name in ("ensemble +0 sd", "ensemble +1 sd"):  # and as an ensemble (of costs: no foreseen changes of its own)
        assert s[f"0.3 {name}"] == {k: v for k, v in s["0.3 model 0"].items() if k in s[f"0.3 {name}"]}, name
    assert len(result["rows"]) == 4 and result["git_commit"]
    bad = run_cli("push", "fidelity", str(tmp_path / "none.safetensors"))
    assert bad.returncode == 2 and "no world model at" in bad.stderr


def test_goal_reaching_evaluation(trained, tmp_path):
    start, goal = goal_task(5, 25)
    again = goal_task(5, 25)
    assert np.array_equal(start, again[0]) and np.array_equal(goal, again[1])
    r = run_cli("push", "goal", str(trained), "--episodes", "2", "--cem.samples", "16", "--cem.iterations", "2",
                "--budget", "10", "--out", str(tmp_path))  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    result = json.loads((tmp_path / "goal.json").read_text())
    assert set(result["summary"]) == {"model", "still", "random"} and len(result["rows"]) == 6
    assert result["git_commit"]
    assert all(row["steps"] <= 10 for row in result["rows"])
    model, _ = load_world_model(trained)
    with pytest.raises(LemarioError, match="goal cost"):
        LatentPlanner(model).set_goal(np.zeros((64, 64, 3), np.uint8))


def test_probes_and_state_head_error_on_push(trained, corpus, tmp_path):
    r = run_cli("probe", str(trained), "--corpus", str(corpus), "--mlp-steps", "20", "--out", str(tmp_path / "p.json"))
    assert r.returncode == 0, r.stderr[-2000:]
    report = json.loads((tmp_path / "p.json").read_text())
    assert {"amber_x", "t_vx", "t_cos", "t_sin"} <= set(report["probes"]) and "t_angle" not in report["probes"]
    assert {"r2", "r"} <= set(report["probes"]["t_x"]["linear"])
    assert 0 < report["state_head"]["t_error"] < 512 and "state head" in r.stdout
    rollout = report["rollout_probes"]  # continuous thrusts fed to the rollout
    assert rollout["starts"] > 0 and "t_x" in rollout["horizons"]["15"] and "rollout probes" in r.stdout


def test_diagnose_command_on_push(trained, corpus, capsys):
    """No jump latch, action promises or death foresight for a game without them; the one-step report and what the
    thrust does are there."""
    diagnose_main(DiagnoseConfig(trained, corpus=corpus, windows=32))
    out = capsys.readouterr().out
    assert "pred_vs_best_baseline" in out and "death" not in out.lower() and "latch" not in out
    assert "given the thrusts played" in out


def test_the_shipped_push_model_replays_a_match_of_its_evaluation():
    """pretrained/push (scripts/ship_push_model.py): the model loads from the repository alone and replays one of the
    matches that scored it exactly (on one thread, as the matches were played), from the side it played."""
    shipped = Path(__file__).parents[2] / "pretrained" / "push"
    prov = json.loads((shipped / "provenance.json").read_text())
    assert set(prov["summaries"]) == {"random", "passive", "chase_t", "adversarial"}
    assert all(s["matches"] == 50 for s in prov["summaries"].values()) and len(prov["rows"]) == 200
    row = next(r for r in prov["rows"] if r["opponent"] == "chase_t")
    played = prov["match_config"]
    cfg = PlayConfig(
        cost=played["cost"],
        warm=played["warm"],
        replan=played["replan"],
        cem=GaussianCEMConfig(**played["cem"]),
        game=PushConfig(**played["game"]),
        guard=played.get("guard", 0.0),
        front=played.get("front", 0.0),
    )
    name = f"{MODEL}{shipped / 'world_model.safetensors'}"
    with torch_threads(1):
        again = match_row(name, row["opponent"], row["seed"], ("amber", "cyan").index(row["side"]), cfg)
    again = {**again, "player": row["player"], "seconds": row["seconds"]}
    # the fields the row was recorded with (later ones are added); distances, and the lists of them, to float32
    # rounding, which differs between CPUs' vector units (an AMD host's distances differed from the recorded ones in
    # the 7th digit, an Intel AMX host's per-turn T movements in the 6th). A turn's T movement is a difference of
    # positions near 256 units, whose float32 steps are 3e-5 units, so its error is absolute (an AMD EPYC's was 5e-5
    # units on a movement of 5.2, 1.01e-5 of it): 1e-3 units, an eight-thousandth of a pixel, still fails any other play
    real = {
        k
        for k, v in row.items()
        if isinstance(v, float) or (isinstance(v, list) and all(isinstance(x, float) for x in v))
    }
    assert {k: again[k] for k in row.keys() - real} == {k: row[k] for k in row.keys() - real}
    for k in real:
        assert again[k] == pytest.approx(row[k], rel=1e-5, abs=1e-3), k


def test_shipping_a_push_model_keeps_its_corpus_key_and_its_matches(trained, corpus, tmp_path, monkeypatch):
    """scripts/ship_push_model.py: the model bit for bit, the options its corpus was made with, the match command's
    config and every match of the model; a model whose corpus is gone is refused."""
    path = Path(__file__).parents[2] / "scripts" / "ship_push_model.py"
    spec = importlib.util.spec_from_file_location("ship_push_model", path)
    ship = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "ship_push_model", ship)  # its dataclass looks its module up
    spec.loader.exec_module(ship)
    r = run_cli("push", "match", "--player", f"model:{trained}", "--opponent", "passive", "--matches", "2",
                "--warm", "adversarial", "--front", "30", "--cem.samples", "4", "--cem.iterations", "1",
                "--out", str(tmp_path / "m"))  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    prov = ship.ship(ship.Args(trained, tmp_path / "m", to=tmp_path / "shipped"))
    assert prov["corpus_key"] == json.loads((corpus / "config.json").read_text())["key"]
    assert prov["match_config"]["front"] == 30.0 and len(prov["rows"]) == 2
    assert (tmp_path / "shipped" / "world_model.safetensors").read_bytes() == trained.read_bytes()
    assert json.loads((tmp_path / "shipped" / "provenance.json").read_text()) == prov
    orphan = tmp_path / "orphan" / "model.safetensors"
    orphan.parent.mkdir()
    shutil.copy(trained, orphan)
    meta = json.loads(trained.with_suffix(".json").read_text())
    meta["train_config"]["corpus"] = str(tmp_path / "gone")
    orphan.with_suffix(".json").write_text(json.dumps(meta))
    with pytest.raises(LemarioError, match="has no config.json"):
        ship.ship(ship.Args(orphan, tmp_path / "m", to=tmp_path / "shipped2"))


def test_the_push_preset_is_the_shipped_models_recipe():
    """`lemario train --preset push` trains what pretrained/push was trained with: its model, its losses and its
    schedule; only where it writes, how long it may run and how it reports differ (options added since it was
    trained: their defaults, which it was trained with)."""
    shipped = json.loads((Path(__file__).parents[2] / "pretrained" / "push" / "world_model.json").read_text())
    run = ("corpus", "out", "minutes", "snapshot_every", "progress", "tensorboard", "threads")
    preset = {k: v for k, v in as_json(PRESETS["push"]).items() if k not in run}
    trained = with_defaults(shipped["train_config"], as_json(TrainConfig()))
    assert preset == {k: v for k, v in trained.items() if k not in run}
