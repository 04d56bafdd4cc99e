"""World model: shapes, rollouts, training on a synthetic corpus, probes, diagnostics, checkpoints, resume, DDP."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pytest
import torch

from lemario.control.imagination import load_policy
from lemario.core import checkpoint, runlog
from lemario.core.device import to_torch
from lemario.core.errors import LemarioError
from lemario.core.executor import torch_threads
from lemario.data.buffer import EpisodeBuffer
from lemario.data.corpus import write_episode
from lemario.games.mario.env import EnvConfig
from lemario.games.mario.ram import LABELS
from lemario.model.diagnose import diagnose
from lemario.model.encoders import CNNEncoder, ViTEncoder
from lemario.model.loss import LossConfig, world_model_loss
from lemario.model.probe_fit import embed_frames
from lemario.model.probes import ProbeConfig, run_probes
from lemario.model.rollout_probes import rolled_out, rollout_scores, rollout_start_frames
from lemario.model.train import PRESETS, train
from lemario.model.trainer import Trainer, budget_clock, recalibrate_batchnorm
from lemario.model.world_model import WorldModel, decode_reward, known_actions, load_world_model

from conftest import run_cli
from synthetic import make_episode, write_corpus

TINY = PRESETS["tiny"].model


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("syn") / "corpus", episodes=24, steps=40)


@pytest.fixture(scope="module")
def trained(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("wm") / "run"
    cfg = replace(
        PRESETS["tiny"],
        corpus=corpus,
        out=out,
        steps=300,
        val_every=100,
        diag_every=100,
        ckpt_every=100,
        snapshot_every=100,
        progress=False,
        loss=LossConfig(sigreg_projections=64, reward_weight=0.1),
    )
    train(cfg)
    return out


def batch_of(corpus, b=8, k=4, seed=0):
    buf = EpisodeBuffer.load(corpus)
    return to_torch(buf.sample(b, k, 4, np.random.default_rng(seed)), torch.device("cpu"))


@pytest.mark.parametrize("kind,shape", [("nature", 64), ("drqv2", 64)])
def test_cnn_shapes(kind, shape):
    enc = CNNEncoder(4, shape, kind)
    out = enc(torch.rand(3, 4, 84, 84))
    assert out.shape == (3, shape) and out.dtype == torch.float32


def test_vit_is_a_cls_token_after_layernorm():
    enc = ViTEncoder(4, 48, patch=12, depth=1, heads=2)
    out = enc(torch.rand(5, 4, 84, 84))
    assert out.shape == (5, 48)
    assert torch.allclose(out.mean(-1), torch.zeros(5), atol=1e-5), "the final LayerNorm centres each token"


@pytest.mark.parametrize("encoder", ["cnn", "vit"])
@pytest.mark.parametrize("predictor", ["mlp", "transformer"])
@pytest.mark.parametrize("prev_action", [False, True])
def test_model_shapes_and_loss(corpus, encoder, predictor, prev_action):
    torch.manual_seed(0)
    model = WorldModel(replace(TINY, encoder=encoder, predictor=predictor, prev_action=prev_action))
    batch = batch_of(corpus)
    emb = model.encode(batch["obs"])
    assert emb.shape == (8, 5, 32) and batch["prev"].shape == (8,)
    assert model.teacher_forced(emb, batch["actions"], batch["prev"]).shape == (8, 4, 32)
    assert model.rollout(emb[:, :1], batch["actions"], batch["prev"]).shape == (8, 4, 32)
    assert model.reward(emb, batch["prev"][:, None].expand(8, 5)).shape == (8, 5, 4)
    assert model.state(emb, torch.zeros(8, 5, dtype=torch.int64)).shape == (8, 5, model.state_dim)
    for free in (True, False):
        loss, m = world_model_loss(model, batch, LossConfig(free_running=free, sigreg_projections=32))
        loss.backward()
        assert torch.isfinite(loss) and {"loss/pred", "loss/sigreg", "loss/reward", "loss/flag"} <= set(m)
    assert all(p.grad is not None for p in model.encoder.parameters()), "gradients reach the encoder: no stop-gradient"


def _wake(model: WorldModel) -> None:
    """Random weights where training starts at zero (AdaLN-zero's action modulation, a residual model's last
    projector layer), so the tests below see every input matter."""
    for block in getattr(model.predictor, "blocks", []):
        if hasattr(block, "modulation"):
            torch.nn.init.normal_(block.modulation[1].weight, std=0.1)
    if model.cfg.residual:
        torch.nn.init.normal_(model.pred_proj.net[-1].weight, std=0.1)


@pytest.mark.parametrize("predictor,residual", [("mlp", False), ("transformer", False), ("transformer", True)])
@pytest.mark.parametrize("prev_action", [False, True])
def test_teacher_forced_windows_match_direct_predictions(predictor, prev_action, residual):
    torch.manual_seed(0)
    cfg = replace(TINY, predictor=predictor, history=3, prev_action=prev_action, residual=residual)
    model = WorldModel(cfg).eval()
    _wake(model)
    emb = torch.randn(2, 7, 32)
    actions, prev = torch.randint(0, 12, (2, 6)), torch.randint(0, 12, (2,))
    before = torch.cat([prev[:, None], actions], dim=1)  # the action before each latent
    tf = model.teacher_forced(emb, actions, prev)
    for t in range(6):
        lo = max(0, t - model.history + 1)
        direct = model.predict(emb[:, lo : t + 1], actions[:, lo : t + 1], before[:, lo])[:, -1]
        assert torch.allclose(tf[:, t], direct, atol=1e-5)
    # free running from one latent: its first step is the teacher-forced first step
    assert torch.allclose(model.rollout(emb[:, :1], actions, prev)[:, 0], tf[:, 0], atol=1e-5)
    other = model.teacher_forced(emb, actions, (prev + 1) % 12)  # only the windows starting at latent 0 see prev
    changed = (other - tf).abs().amax(dim=(0, 2)) > 1e-6  # (K,)
    assert changed.tolist() == [prev_action and t < model.history for t in range(6)]


@pytest.mark.parametrize("predictor,residual", [("mlp", False), ("transformer", False), ("transformer", True)])
@pytest.mark.parametrize("prev_action", [False, True])
@pytest.mark.parametrize("training", [False, True])
def test_rollout_is_predict_fed_its_own_outputs(predictor, prev_action, training, residual):
    """The rollout conditions the action sequence once and slides windows over it: the same numbers as calling
    `predict` on each window with the predictions fed back (in train mode BatchNorm normalises whole windows)."""
    torch.manual_seed(0)
    cfg = replace(TINY, predictor=predictor, history=3, prev_action=prev_action, pred_dropout=0.0, residual=residual)
    model = WorldModel(cfg)
    model.train(training)
    _wake(model)
    c, n = 2, 5
    context, actions, prev = torch.randn(3, c, 32), torch.randint(0, 12, (3, c - 1 + n)), torch.randint(0, 12, (3,))
    before = torch.cat([prev[:, None], actions], dim=1)  # the action before each latent
    seq = list(context.unbind(1))
    for j in range(c - 1, c - 1 + n):
        lo = max(0, j - model.history + 1)
        seq.append(model.predict(torch.stack(seq[lo : j + 1], 1), actions[:, lo : j + 1], before[:, lo])[:, -1])
    assert torch.allclose(model.rollout(context, actions, prev), torch.stack(seq[c:], 1), atol=1e-5)


def _slow_batch(g: torch.Generator, n: int = 128):
    """A slow world, as the push game's latents are: windows of 3 random latents (B, 3, 16) and thrusts (B, 3, 4);
    the thrust moves the first 4 dimensions of the newest latent by 0.1 x thrust."""
    z, a = torch.randn(n, 3, 16, generator=g), torch.rand(n, 3, 4, generator=g) * 2 - 1
    target = z[:, -1].clone()
    target[:, :4] += 0.1 * a[:, -1]
    return z, a, target


def test_a_residual_predictor_starts_as_no_change_and_beats_it_where_a_plain_one_cannot():
    """Rebuilding the latent through the predictor's projector costs more than the whole step's change (the push
    model's fault, issue 17); predicting the change starts exactly at "no change" and learns the thrust's effect."""
    cfg = replace(TINY, latent_dim=16, n_actions=4, continuous_actions=True, predictor="transformer", history=3)
    cfg = replace(cfg, pred_hidden=64, pred_dropout=0.0)
    z, a, target = _slow_batch(torch.Generator().manual_seed(2), 1024)
    no_change = (z[:, -1] - target).square().mean().item()
    error = {}
    for residual in (False, True):
        torch.manual_seed(0)
        model = WorldModel(replace(cfg, residual=residual))
        if residual:
            assert torch.equal(model.eval().predict(z, a, a[:, 0])[:, -1], z[:, -1])  # no change at init
            assert torch.equal(model.rollout(z, a, a[:, 0])[:, 0], z[:, -1])
        model.train()
        opt = torch.optim.Adam([*model.predictor.parameters(), *model.pred_proj.parameters()], lr=3e-3)
        g = torch.Generator().manual_seed(1)
        for _ in range(200):
            zb, ab, tb = _slow_batch(g)
            loss = (model.predict(zb, ab, ab[:, 0])[:, -1] - tb).square().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            error[residual] = (model.eval().predict(z, a, a[:, 0])[:, -1] - target).square().mean().item()
    assert error[False] > no_change, (error, no_change)  # measured: ~100x worse
    assert error[True] < 0.5 * no_change, (error, no_change)  # measured: ~17x better


def _latch_batch(g: torch.Generator, n: int = 256):
    """SMB's jump latch on random latents (B, 1, 8): action 1 ("A") lifts dimension 0 by 2 only when the action
    before was not 1 (A released); held, it does nothing."""
    z = torch.randn(n, 1, 8, generator=g)
    a, prev = torch.randint(0, 2, (n, 1), generator=g), torch.randint(0, 2, (n,), generator=g)
    target = z[:, 0].clone()
    target[:, 0] += 2.0 * ((a[:, 0] == 1) & (prev == 0)).float()
    return z, a, prev, target


@pytest.mark.parametrize("predictor", ["mlp", "transformer"])
def test_the_previous_action_lets_the_predictor_learn_the_jump_latch(predictor):
    """Without the previous action the next latent is not a function of (z, a): the best a predictor can do on a
    held A is the average of the two outcomes (error ~1 on dimension 0); with it, the latch is learnt."""
    held_error = {}
    for prev_action in (False, True):
        torch.manual_seed(0)
        cfg = replace(TINY, latent_dim=8, n_actions=2, predictor=predictor, history=1, pred_hidden=64, pred_dropout=0.0)
        model = WorldModel(replace(cfg, prev_action=prev_action))
        opt = torch.optim.Adam([*model.predictor.parameters(), *model.pred_proj.parameters()], lr=3e-3)
        g = torch.Generator().manual_seed(1)
        for _ in range(400):
            z, a, prev, target = _latch_batch(g)
            loss = (model.predict(z, a, prev)[:, 0] - target).square().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        z, a, prev, target = _latch_batch(torch.Generator().manual_seed(2), 2048)
        with torch.no_grad():
            err = (model.eval().predict(z, a, prev)[:, 0, 0] - target[:, 0]).square()
        held_error[prev_action] = err[(a[:, 0] == 1) & (prev == 1)].mean().item()
    assert held_error[False] > 0.5, held_error
    assert held_error[True] < 0.2 * held_error[False], held_error  # (the transformer's final LayerNorm costs ~0.13)


def test_training_loss_falls_and_probes_beat_chance(trained, corpus):
    rows = [json.loads(line) for line in (trained / "metrics.jsonl").read_text().splitlines()]
    pred = [r["loss/pred"] for r in rows if "loss/pred" in r]
    assert np.mean(pred[-5:]) < 0.5 * np.mean(pred[:3])
    val = [r for r in rows if "val/loss/pred" in r]
    assert val[-1]["val/loss/pred"] < val[0]["val/loss/pred"]
    peak = json.loads((trained / "model.json").read_text())["metrics"]["sys/peak_rss_gib"]
    assert 0.05 < peak < 24 and val[-1]["sys/peak_rss_gib"] == peak, "the process's peak memory, logged and kept"
    report = run_probes(ProbeConfig(checkpoint=trained / "model.safetensors", corpus=corpus, mlp_steps=300))
    probes = report["probes"]  # chance is R2 0 and balanced accuracy 0.5
    assert probes["x_pos"]["linear"]["r2"] > 0.15 and probes["x_pos"]["mlp"]["r2"] > 0.6
    assert probes["y_pos"]["linear"]["r2"] > 0.3 and probes["y_pos"]["mlp"]["r2"] > 0.6
    assert probes["on_ground"]["linear"]["balanced_accuracy"] > 0.6
    assert report["trunk_probes"]["x_pos"]["mlp"]["r2"] > 0.6, "the trunk holds what the embedding is made from"
    assert {"enemy_dx", "enemy_near"} <= probes.keys(), "a Mario corpus's stored RAM gives the enemy targets"
    assert (trained / "probe.json").exists()
    rollout = report["rollout_probes"]
    assert rollout["starts"] > 100 and list(rollout["horizons"]) == [1, 4, 15]
    x = {k: {w: s["r2"] for w, s in r["x_pos"].items()} for k, r in rollout["horizons"].items()}
    assert x[15]["no_change"] < x[15]["real"] - 0.05, "the square moves: the start tells less of frame t+15"
    assert np.isfinite([x[k]["rollout"] for k in x]).all()


def test_rollout_start_frames_leave_room_for_context_and_horizon(corpus):
    buffer = EpisodeBuffer.load(corpus)
    use = np.arange(len(buffer.starts)) % 2 == 0
    t = rollout_start_frames(buffer, use, history=3, horizon=15, n=10**6, seed=0)
    episode = np.searchsorted(buffer.starts, t, side="right") - 1
    assert use[episode].all() and len(t) == use.sum() * (41 - 2 - 15)
    assert (t - 2 >= buffer.starts[episode]).all() and (t + 15 < buffer.starts[episode] + 41).all()
    assert len(rollout_start_frames(buffer, use, 3, 15, n=50, seed=0)) == 50
    assert len(rollout_start_frames(buffer, use, 3, 40, n=50, seed=0)) == 0, "no episode is long enough"


def test_a_rollout_reuses_the_frames_already_embedded(trained, corpus):
    """The probes' embeddings stand in for the frames they cover: the same latents as embedding every frame anew."""
    model, _ = load_world_model(trained / "model.safetensors")
    buffer = EpisodeBuffer.load(corpus)
    t = rollout_start_frames(buffer, np.ones(len(buffer.starts), bool), model.history, 4, n=64, seed=0)
    idx = np.arange(0, len(buffer), 2)  # half the frames known
    known = rolled_out(model, buffer, t, 4, idx, embed_frames(model, buffer, idx)[1])
    fresh = rolled_out(model, buffer, t, 4, idx[:0], np.zeros((0, model.cfg.latent_dim), np.float32))
    for a, b in zip(known, fresh):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_rollout_scores_read_the_real_the_predicted_and_the_start_latent():
    """Known answer: a label linear in the latent; a rollout that is the real future scores as the real latent, one
    that never moves as "no change"."""
    rng = np.random.default_rng(0)
    w = rng.normal(size=6)
    x_fit = rng.normal(size=(400, 6))
    real = np.cumsum(rng.normal(size=(300, 5, 6)), axis=1)  # (B, K+1, D) latents that drift
    y_ahead = real @ w
    groups = np.arange(400) // 20
    args = (x_fit, x_fit @ w, groups, real)
    perfect = rollout_scores(*args, real[:, 1:], y_ahead, (1, 4), binary=False)
    frozen = rollout_scores(*args, np.repeat(real[:, :1], 4, axis=1), y_ahead, (1, 4), binary=False)
    for k in (1, 4):
        assert perfect[k]["rollout"]["r2"] == pytest.approx(perfect[k]["real"]["r2"]) == pytest.approx(1, abs=1e-3)
        assert frozen[k]["rollout"]["r2"] == pytest.approx(frozen[k]["no_change"]["r2"])
    assert frozen[4]["no_change"]["r2"] < frozen[1]["no_change"]["r2"] < 0.9


def test_probes_fitted_on_training_levels_are_scored_on_held_out_ones(trained, tmp_path):
    """Issue 21's transfer probe: fitted on one level's episodes, scored on a level of the same look (the probe
    carries over) and on one drawn on another background (it carries over less)."""
    root = tmp_path / "levels"
    write_corpus(root / "1-1", episodes=16, seed=5)
    write_corpus(root / "2-1", episodes=8, seed=6, level="2-1")
    write_corpus(root / "3-1", episodes=8, seed=7, level="3-1", background=120)
    model = str(trained / "model.safetensors")
    cfg = ProbeConfig(
        checkpoint=Path(model), corpus=root, mlp_steps=300, held_out_levels=("2-1", "3-1"), out=tmp_path / "p.json"
    )
    report = run_probes(cfg)
    held = report["held_out_levels"]
    assert held["2-1"]["frames"] == held["3-1"]["frames"] == 8 * 41
    assert report["fit_episodes"] + report["score_episodes"] == 16  # only the training level's episodes
    y_pos = {level: held[level]["probes"]["y_pos"]["mlp"]["r2"] for level in held}  # chance: 0
    assert y_pos["2-1"] > 0.4 and y_pos["3-1"] < 0.2, y_pos
    kept = {level: held[level]["retention"]["x_pos"] for level in held}  # held-out R2 / in-distribution R2
    # the other background keeps less of it (how much less depends on the tiny model's float rounding: on one
    # AVX-512 host under one thread it kept 0.83 against 1.46, elsewhere below 0)
    assert kept["3-1"] < kept["2-1"] and kept["2-1"] > 0, kept
    r = run_cli("probe", model, "--corpus", str(root), "--held-out-levels", "4-1", "--out", str(tmp_path / "q.json"))
    assert r.returncode == 2 and "holds no frames of held-out level(s) 4-1" in r.stderr
    r = run_cli("probe", model, "--corpus", str(root), "--held-out-levels", "9-1", "--out", str(tmp_path / "q.json"))
    assert r.returncode == 2 and "unknown level '9-1'" in r.stderr


def test_action_progress_pairs_each_action_with_the_steps_that_took_it(trained, corpus):
    from lemario.model.diagnose import action_progress

    model, _ = load_world_model(trained / "model.safetensors")
    batch = batch_of(corpus, b=64, k=1)
    rows = action_progress(model, batch)
    taken, x = batch["actions"][:, 0], batch["labels"][..., LABELS.index("x_pos")].float()
    assert [r["action"] for r in rows] == list(range(model.cfg.n_actions))
    assert sum(r["steps"] for r in rows) == 64
    for r in rows:
        mask = taken == r["action"]
        if mask.any():
            assert r["real_dx"] == pytest.approx((x[mask, 1] - x[mask, 0]).mean().item())
        else:  # never taken: promised something all the same
            assert np.isnan(r["real_dx"]) and np.isfinite(r["predicted_dx_everywhere"])
    assert any(r["steps"] == 0 for r in rows)


def test_collapsed_predictor_is_flagged(trained, corpus):
    model, _ = load_world_model(trained / "model.safetensors")
    batch = batch_of(corpus, b=64)
    metrics, warnings = diagnose(model, batch)
    assert metrics["diag/sensitivity_latent"] > 0.05 and not any("IGNORES ITS INPUT" in w for w in warnings)
    with torch.no_grad():  # the seed's failure: dead hidden units, the output is the last layer's bias
        last = model.predictor.out[-1]
        last.weight.zero_()
    metrics, warnings = diagnose(model, batch)
    assert metrics["diag/sensitivity_latent"] < 0.01 and metrics["diag/sensitivity_action"] < 0.01
    assert any("IGNORES ITS INPUT LATENT" in w for w in warnings)
    assert metrics["diag/action_vs_step"] < 0.01 and any("ignores the action" in w for w in warnings)


def test_action_warning_measures_the_action_against_a_real_step(trained, corpus):
    model, _ = load_world_model(trained / "model.safetensors")
    batch = batch_of(corpus, b=64)
    # a residual predictor at init: its last layer starts at zero, so it predicts "no change" whatever the action
    metrics, warnings = diagnose(WorldModel(replace(model.cfg, residual=True)), batch)
    assert metrics["diag/action_vs_step"] == 0 and any("ignores the action" in w for w in warnings)
    metrics, warnings = diagnose(model, batch)
    assert metrics["diag/action_vs_step"] > 0.05 and not any("ignores the action" in w for w in warnings)


def test_recalibrated_batchnorm_matches_batch_statistics(trained, corpus):
    """Eval mode (running statistics) must score a batch like train mode (its own statistics) does."""
    model, _ = load_world_model(trained / "model.safetensors")
    cfg = replace(PRESETS["tiny"], corpus=corpus)
    batch = batch_of(corpus, b=32, seed=5)
    with torch.no_grad():
        eval_loss = world_model_loss(model.eval(), batch, cfg.loss, torch.Generator().manual_seed(0))[1]
        train_loss = world_model_loss(model.train(), batch, cfg.loss, torch.Generator().manual_seed(0))[1]
    assert eval_loss["loss/pred"] == pytest.approx(train_loss["loss/pred"], rel=0.3)
    assert eval_loss["loss/sigreg"] == pytest.approx(train_loss["loss/sigreg"], rel=0.3)


def test_save_load_identical_outputs(trained, corpus, tmp_path):
    model, meta = load_world_model(trained / "model.safetensors")
    assert meta["kind"] == "world_model" and meta["step"] == 300 and meta["git_commit"]
    checkpoint.save(
        tmp_path / "copy.safetensors",
        model.state_dict(),
        {k: v for k, v in meta.items() if k not in ("git_commit", "lemario_version")},
    )
    again, _ = load_world_model(tmp_path / "copy.safetensors")
    batch = batch_of(corpus)
    with torch.no_grad():
        a, b = model.encode(batch["obs"]), again.encode(batch["obs"])
        assert torch.equal(a, b)
        assert torch.equal(
            model.rollout(a[:, :1], batch["actions"], batch["prev"]),
            again.rollout(b[:, :1], batch["actions"], batch["prev"]),
        )


def test_checkpoints_from_before_the_previous_action_load_and_ignore_it(trained, corpus, tmp_path):
    shutil.copy(trained / "model.safetensors", tmp_path / "old.safetensors")
    meta = json.loads((trained / "model.json").read_text())
    del meta["config"]["prev_action"]  # a sidecar written before the field existed
    (tmp_path / "old.json").write_text(json.dumps(meta))
    old, _ = load_world_model(tmp_path / "old.safetensors")
    assert not old.cfg.prev_action and old.state_dim == old.cfg.latent_dim
    batch = batch_of(corpus)
    with torch.no_grad():
        z = old.encode(batch["obs"])
        a = old.rollout(z[:, :1], batch["actions"], batch["prev"])
        b = old.rollout(z[:, :1], batch["actions"], (batch["prev"] + 1) % 5)
    assert torch.equal(a, b)


def test_checkpoints_from_before_the_flag_head_load_and_predict_no_flag(corpus, tmp_path):
    torch.manual_seed(0)
    model = WorldModel(replace(TINY, flag_head=False)).eval()
    config = {k: v for k, v in asdict(model.cfg).items() if k != "flag_head"}  # a sidecar from before the field
    checkpoint.save(tmp_path / "old.safetensors", model.state_dict(), {"kind": "world_model", "config": config})
    old, _ = load_world_model(tmp_path / "old.safetensors")
    assert not old.cfg.flag_head
    batch = batch_of(corpus)
    with torch.no_grad():
        out = old.reward(old.encode(batch["obs"]), batch["prev"][:, None].expand(8, 5))
    decoded = decode_reward(out)
    assert out.shape == (8, 5, 3) and decoded.shape == (8, 5, 4) and not decoded[..., 3].any()
    loss, m = world_model_loss(old.train(), batch, LossConfig(sigreg_projections=32))
    assert torch.isfinite(loss) and "loss/flag" not in m


def test_the_ensemble_learns_beside_the_model_and_disagrees_off_its_data(corpus):
    torch.manual_seed(0)
    model = WorldModel(replace(TINY, ensemble=4))
    batch = batch_of(corpus)
    gen = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    loss, m = world_model_loss(model, batch, LossConfig(sigreg_projections=32), gen())
    loss.backward()
    with_ensemble = [p.grad.clone() for p in model.encoder.parameters()]
    model.zero_grad()
    heads, model.cfg = model.ensemble_heads, replace(model.cfg, ensemble=0)
    world_model_loss(model, batch, LossConfig(sigreg_projections=32), gen())[0].backward()
    for a, p in zip(with_ensemble, model.encoder.parameters()):
        torch.testing.assert_close(a, p.grad, msg="the ensemble's loss does not reach the encoder")
    assert m["loss/ensemble"] > 0
    # fitted on some transitions, the heads agree there and disagree on latents they never saw
    z, prev, a = torch.randn(64, 32), torch.randint(0, 12, (64,)), torch.randint(0, 12, (64,))
    target = torch.tanh(z.roll(1, dims=-1))
    opt = torch.optim.Adam(heads.parameters(), lr=3e-3)
    model.cfg = replace(model.cfg, ensemble=4)
    for _ in range(300):
        opt.zero_grad()
        (model.ensemble_predictions(z, prev, a) - target).square().mean().backward()
        opt.step()
    with torch.no_grad():
        seen, unseen = model.disagreement(z, prev, a), model.disagreement(5 * torch.randn(64, 32), prev, a)
    assert seen.shape == (64,) and seen.mean() * 10 < unseen.mean()


def test_the_flag_loss_weights_the_rare_touch(corpus):
    torch.manual_seed(0)
    model = WorldModel(TINY)
    batch = batch_of(corpus)
    assert not batch["rewards"][..., 3].any(), "the synthetic corpus has no flag"
    touched = {**batch, "rewards": batch["rewards"].clone()}
    touched["rewards"][0, 0, 3] = 1.0
    with torch.no_grad():
        plain = world_model_loss(model, batch, LossConfig(sigreg_projections=32), torch.Generator().manual_seed(0))[1]
        light = world_model_loss(
            model, touched, LossConfig(sigreg_projections=32, flag_weight=1.0), torch.Generator().manual_seed(0)
        )[1]
        heavy = world_model_loss(model, touched, LossConfig(sigreg_projections=32), torch.Generator().manual_seed(0))[1]
    assert plain["loss/flag"] < light["loss/flag"] < heavy["loss/flag"]


def test_known_actions_are_those_that_took_their_share_of_the_corpus():
    meta = {"action_counts": [500, 0, 300, 1, 199]}
    assert known_actions(meta, 0.002).tolist() == [True, False, True, False, True]  # 1 of 1000 steps is 0.1%...
    assert known_actions(meta, 0.001).tolist() == [True, False, True, True, True]  # ...and a share is inclusive
    assert known_actions(meta, 0.0) is None and known_actions({}, 0.001) is None  # every action: off, or no counts
    with pytest.raises(LemarioError, match="lower the minimum share"):
        known_actions(meta, 0.9)
    with pytest.raises(LemarioError, match=r"not in \[0, 1\)"):
        known_actions(meta, -0.1)


def test_bad_checkpoints_are_clear_errors(trained, tmp_path):
    with pytest.raises(LemarioError, match="no checkpoint"):
        load_world_model(tmp_path / "nothing.safetensors")
    with pytest.raises(LemarioError, match="'world_model_training' checkpoint, expected 'world_model'"):
        load_world_model(trained / "ckpt_latest.safetensors")
    shutil.copy(trained / "model.safetensors", tmp_path / "m.safetensors")
    meta = json.loads((trained / "model.json").read_text())
    meta["config"]["latent_dim"] = 48
    (tmp_path / "m.json").write_text(json.dumps(meta))
    with pytest.raises(LemarioError, match="does not fit this model"):
        load_world_model(tmp_path / "m.safetensors")
    r = run_cli("probe", str(tmp_path / "nothing.safetensors"))
    assert r.returncode == 2 and "no checkpoint" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def _weights(folder: Path) -> dict:
    return checkpoint.load(folder / "model.safetensors")[0]


def test_snapshots_keep_the_weights_along_training_without_changing_it(trained, corpus, tmp_path):
    snaps = sorted((trained / "snapshots").glob("*.safetensors"))
    assert [p.name for p in snaps] == [f"step-{s:06d}.safetensors" for s in (100, 200, 300)]
    assert checkpoint.load_meta(snaps[0], kind="world_model")["step"] == 100
    last, final = checkpoint.load(snaps[-1])[0], _weights(trained)
    assert all(torch.equal(last[k], final[k]) for k in final)
    cfg = replace(PRESETS["tiny"], corpus=corpus, steps=20, val_every=10, progress=False, tensorboard=False)
    train(replace(cfg, out=tmp_path / "plain"))
    train(replace(cfg, out=tmp_path / "snap", snapshot_every=10))
    plain, snap = _weights(tmp_path / "plain"), _weights(tmp_path / "snap")
    assert all(torch.equal(plain[k], snap[k]) for k in plain)
    with pytest.raises(LemarioError, match="multiple of --val-every"):
        train(replace(cfg, out=tmp_path / "odd", snapshot_every=15))


def test_same_seed_same_first_steps(corpus, tmp_path):
    cfg = replace(PRESETS["tiny"], corpus=corpus, steps=6, log_every=1, progress=False, tensorboard=False)
    train(replace(cfg, out=tmp_path / "a"))
    train(replace(cfg, out=tmp_path / "b"))

    def losses(run):
        rows = [json.loads(x) for x in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
        return [r["loss/total"] for r in rows if "loss/total" in r]

    la, lb = losses("a"), losses("b")
    assert la == lb and len(la) == 6
    wa, wb = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_stop_at_ends_early_on_the_full_schedule(corpus, tmp_path):
    """`stop_at` replays a time-budgeted run's length: same steps, same learning rates, as the full run's start."""
    cfg = replace(PRESETS["tiny"], corpus=corpus, steps=8, warmup=2, log_every=1, progress=False, tensorboard=False)
    train(replace(cfg, out=tmp_path / "full"))
    train(replace(cfg, out=tmp_path / "stopped", stop_at=5))

    def rows(run):
        return [
            r for r in map(json.loads, (tmp_path / run / "metrics.jsonl").read_text().splitlines()) if "loss/total" in r
        ]

    full, stopped = rows("full"), rows("stopped")
    assert [r["step"] for r in stopped] == [1, 2, 3, 4, 5]
    assert [(r["loss/total"], r["train/lr"]) for r in stopped] == [(r["loss/total"], r["train/lr"]) for r in full[:5]]
    assert stopped[-1]["train/lr"] > 0.5 * cfg.lr  # mid-cosine over 8 steps, not the end of a 5-step schedule
    assert json.loads((tmp_path / "stopped" / "model.json").read_text())["step"] == 5


def test_a_resumed_run_counts_its_earlier_minutes_against_the_budget(corpus, tmp_path):
    """--minutes budgets the run, not each process: a run stopped after T seconds and resumed with a budget of T/2
    stops at once, where a fresh budget would have trained on."""
    cfg = replace(PRESETS["tiny"], corpus=corpus, out=tmp_path / "run", steps=400, progress=False, tensorboard=False)
    train(replace(cfg, stop_at=6))
    seconds = checkpoint.load_meta(tmp_path / "run" / "ckpt_latest.safetensors")["seconds"]
    assert seconds > 0
    train(replace(cfg, minutes=seconds / 2 / 60))
    assert json.loads((tmp_path / "run" / "model.json").read_text())["step"] == 6


def test_a_resumed_run_logs_on_one_time_axis(corpus, tmp_path):
    """The log's `time` is the run's wall-clock seconds over every process: it goes on rising across a resume."""
    cfg = replace(PRESETS["tiny"], corpus=corpus, out=tmp_path / "run", steps=12, progress=False, tensorboard=False)
    train(replace(cfg, stop_at=6, log_every=1))
    time.sleep(1.0)  # between the processes: not training, so not on the axis
    train(replace(cfg, log_every=1))
    rows = [r for r in runlog.read_rows(tmp_path / "run" / runlog.NAME) if "loss/total" in r]
    assert [r["step"] for r in rows] == list(range(1, 13))
    times = [r["time"] for r in rows]
    assert times == sorted(times) and times[6] - times[5] < 1.0


def test_the_cpu_budget_clock_counts_this_process_work_over_its_threads():
    """'cpu' advances with this process's CPU time over its torch threads and not while it waits (as it would while
    other processes hold the cores); on an accelerator, and for 'wall', it is the wall clock."""
    with torch_threads(2):
        name, clock = budget_clock("cpu", torch.device("cpu"))
        start, wall = clock(), time.time()
        time.sleep(0.3)
        slept = clock() - start
        cpu = time.process_time()
        while time.process_time() - cpu < 0.2:  # one thread busy for 0.2 CPU seconds
            pass
        busy = clock() - start - slept
    assert name == "cpu" and slept < 0.05 and time.time() - wall >= 0.3
    assert busy == pytest.approx(0.1, abs=0.03), "0.2 CPU seconds over 2 threads"
    assert budget_clock("cpu", torch.device("cuda"))[0] == budget_clock("wall", torch.device("cpu"))[0] == "wall"
    assert budget_clock("wall", torch.device("cpu"))[1] is time.time


def test_resume_after_kill_continues_the_same_run(corpus, tmp_path):
    args = [
        "train",
        "--preset",
        "tiny",
        "--corpus",
        str(corpus),
        "--steps",
        "40",
        "--ckpt-every",
        "10",
        "--no-progress",
        "--no-tensorboard",
    ]
    proc = subprocess.Popen(
        [sys.executable, "-m", "lemario.cli", *args, "--out", str(tmp_path / "killed")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    side = tmp_path / "killed" / "ckpt_latest.json"
    deadline = time.time() + 120
    while time.time() < deadline and not (side.exists() and json.loads(side.read_text())["step"] >= 10):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "killed" / "model.safetensors").exists(), "killed before the end"
    r = run_cli(*args, "--out", str(tmp_path / "killed"))
    assert r.returncode == 0, r.stderr
    assert "resuming" in r.stdout
    r = run_cli(*args, "--out", str(tmp_path / "straight"))
    assert r.returncode == 0, r.stderr
    wk, ws = _weights(tmp_path / "killed"), _weights(tmp_path / "straight")
    assert all(torch.allclose(wk[k].float(), ws[k].float(), atol=1e-6) for k in ws)
    steps = [json.loads(x)["step"] for x in (tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()]
    assert max(steps) == 40


def _start_training(corpus: Path, out: Path, *extra: str) -> subprocess.Popen:
    args = ["train", "--preset", "tiny", "--corpus", str(corpus), "--steps", "40", "--no-progress", "--no-tensorboard"]
    return subprocess.Popen(
        [sys.executable, "-m", "lemario.cli", *args, *extra, "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _train_rows(out: Path) -> list[int]:
    """Steps of the training rows of a run's log."""
    rows = map(json.loads, (out / "metrics.jsonl").read_text().splitlines())
    return [r["step"] for r in rows if "loss/total" in r]


def test_sigkill_at_a_random_moment_loses_at_most_the_clock_interval(corpus, tmp_path):
    """Checkpoints on a clock (every 0.2 s here, none on steps): a SIGKILL anywhere loses at most that interval,
    the resumed run is the uninterrupted one, and its log holds each step once."""
    clock = ("--ckpt-every", "1000", "--ckpt-minutes", str(0.2 / 60))
    proc = _start_training(corpus, tmp_path / "killed", *clock)
    side = tmp_path / "killed" / "ckpt_latest.json"
    deadline = time.time() + 120
    while time.time() < deadline and not side.exists():
        time.sleep(0.02)
    time.sleep(float(np.random.default_rng().uniform(0.0, 1.5)))  # a random moment of training
    killed_at = time.time()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    if (tmp_path / "killed" / "model.safetensors").exists():
        pytest.skip("training finished before the kill (machine much faster than this test assumes)")
    log = tmp_path / "killed" / "metrics.jsonl"
    rows = [json.loads(r) for r in log.read_text().splitlines()] if log.exists() else []
    timed = [(r["step"], r["time"]) for r in rows if "loss/total" in r]
    step_s = (timed[-1][1] - timed[0][1]) / max(1, timed[-1][0] - timed[0][0]) if len(timed) > 1 else 0.5
    # the interval, then at most a step in flight and the checkpoint's write (a step's time measured on this load)
    assert killed_at - side.stat().st_mtime < 0.2 + 2 * step_s + 0.5
    assert json.loads(side.read_text())["step"] > 0
    args = ("--preset", "tiny", "--corpus", str(corpus), "--steps", "40", "--no-progress", "--no-tensorboard", *clock)
    assert run_cli("train", *args, "--out", str(tmp_path / "killed")).returncode == 0
    assert run_cli("train", *args, "--out", str(tmp_path / "straight")).returncode == 0
    wk, ws = _weights(tmp_path / "killed"), _weights(tmp_path / "straight")
    assert all(torch.equal(wk[k], ws[k]) for k in ws)
    assert _train_rows(tmp_path / "killed") == _train_rows(tmp_path / "straight") == list(range(5, 41, 5))


def test_sigterm_checkpoints_then_exits(corpus, tmp_path):
    proc = _start_training(corpus, tmp_path / "run", "--ckpt-every", "1000", "--ckpt-minutes", "0")
    log = tmp_path / "run" / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (log.exists() and _train_rows(tmp_path / "run")):
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "interrupted" in err and len(err.strip().splitlines()) == 1, err
    step = json.loads((tmp_path / "run" / "ckpt_latest.json").read_text())["step"]
    assert f"stopped at step {step}" in out and 0 < step < 40


def test_other_config_in_run_folder_is_refused(trained, corpus):
    r = run_cli(
        "train", "--preset", "tiny", "--corpus", str(corpus), "--out", str(trained), "--lr", "0.1", "--no-progress"
    )
    assert r.returncode == 2 and "holds a world-model run with another config (" in r.stderr
    assert "lr: 0.0003 -> 0.1" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_training_draws_windows_by_their_tier_weight(tmp_path):
    """--oversample: windows of an elite episode (max_x >= 1500) weigh 4, the others 1."""
    rng = np.random.default_rng(0)
    (tmp_path / "corpus").mkdir()
    for i in range(3):
        ep = make_episode(rng, 30)
        if i == 0:
            ep.labels[:, LABELS.index("x_pos")] += 1600
        write_episode(tmp_path / "corpus" / f"run-0001-{i:05d}.h5", ep)
    cfg = replace(PRESETS["tiny"], corpus=tmp_path / "corpus", out=tmp_path / "run", val_fraction=0.0)
    t = Trainer(replace(cfg, oversample=(1, 1, 1, 4, 1)), torch.device("cpu"), 0, 1)
    elite = t.train_starts < t.buffer.starts[1]
    assert elite.sum() == len(t.train_starts) // 3
    np.testing.assert_allclose(t.train_p[elite], 4 * t.train_p[~elite][0])
    assert Trainer(cfg, torch.device("cpu"), 0, 1).train_p is None


def test_a_corpus_of_cropped_frames_needs_a_model_that_says_so(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "corpus").mkdir()
    for i in range(3):
        ep = make_episode(rng, 30)
        ep.meta.update(crop_top=32, pool=False)
        write_episode(tmp_path / "corpus" / f"run-0001-{i:05d}.h5", ep)
    cfg = replace(PRESETS["tiny"], corpus=tmp_path / "corpus", out=tmp_path / "run", steps=2, progress=False)
    with pytest.raises(
        LemarioError, match="cut 32 rows from the top, not max-pooled.*--model.crop-top 32 --model.no-pool"
    ):
        train(cfg)
    train(replace(cfg, model=replace(cfg.model, crop_top=32, pool=False), tensorboard=False))
    ep = make_episode(rng, 30)  # an episode of the default preprocessing joins
    write_episode(tmp_path / "corpus" / "run-0002-00000.h5", ep)
    with pytest.raises(LemarioError, match="mixes frames of crop 0 pooled and crop 32 unpooled"):
        EpisodeBuffer.load(tmp_path / "corpus")


def test_a_run_from_before_the_flag_head_resumes_only_without_it(corpus, tmp_path):
    """A run folder whose config predates the flag head trained a head of three outputs: resuming it with the
    default would build four, so it is refused, naming the field; --model.no-flag-head resumes it."""
    cfg = replace(PRESETS["tiny"], corpus=corpus, out=tmp_path, steps=4, progress=False, tensorboard=False)
    no_flag = replace(cfg, model=replace(cfg.model, flag_head=False))
    train(no_flag)
    record = json.loads((tmp_path / "config.json").read_text())
    del record["run_key"]["model"]["flag_head"]
    (tmp_path / "config.json").write_text(json.dumps(record))
    with pytest.raises(LemarioError, match=r"model.flag_head: False -> True"):
        train(cfg)
    train(no_flag)  # the same run resumes
    assert json.loads((tmp_path / "model.json").read_text())["step"] == 4


def test_cli_probe_and_diagnose(trained, corpus):
    r = run_cli("probe", str(trained / "model.safetensors"), "--corpus", str(corpus), "--mlp-steps", "50")
    assert r.returncode == 0, r.stderr
    assert "x_pos" in r.stdout and "R2" in r.stdout and "is_dying" in r.stdout and "encoder trunk:" in r.stdout
    r = run_cli("diagnose", str(trained / "model.safetensors"), "--corpus", str(corpus), "--windows", "64")
    assert r.returncode == 0, r.stderr
    assert "sensitivity_latent" in r.stdout and "effective_rank" in r.stdout
    assert "AUC all n/a (0 frames)" in r.stdout and "ECE" in r.stdout, "the synthetic corpus has no deaths"
    assert "predicted everywhere" in r.stdout and "never taken" in r.stdout, "the synthetic corpus takes 5 actions"
    r = run_cli("status", str(trained))
    assert r.returncode == 0 and "finished, step 300 of 300 logged, checkpoint at step 300" in r.stdout, r.stderr


def test_ddp_two_cpu_processes(corpus, tmp_path):
    import socket

    with socket.socket() as sock:  # a free loopback port for the rendezvous
        sock.bind(("127.0.0.1", 0))
        port = str(sock.getsockname()[1])
    torchrun = Path(sys.executable).with_name("torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run(
        [
            str(torchrun),
            "--nproc_per_node",
            "2",
            "--master_addr",
            "127.0.0.1",
            "--master_port",
            port,
            "-m",
            "lemario.cli",
            "train",
            "--preset",
            "tiny",
            "--corpus",
            str(corpus),
            "--out",
            str(tmp_path / "ddp"),
            "--steps",
            "8",
            "--no-progress",
            "--no-tensorboard",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    cfg = json.loads((tmp_path / "ddp" / "config.json").read_text())
    assert cfg["world_size"] == 2
    model, meta = load_world_model(tmp_path / "ddp" / "model.safetensors")
    assert meta["step"] == 8


def test_planner_agent_plays_through_the_harness(trained, tmp_path):
    from lemario.control.planner import PlannerConfig
    from lemario.play.evaluate import EvalConfig, evaluate

    s = evaluate(
        EvalConfig(
            agents=(f"planner:{trained / 'model.safetensors'}",),
            episodes=2,
            workers=1,
            env=EnvConfig(max_steps=15),
            out=tmp_path / "ev",
            planner=PlannerConfig(samples=32, elites=4, iterations=2, horizon=5),
        )
    )
    agg = next(iter(s["per_agent"].values()))
    assert agg["episodes"] == 2 and 0 <= agg["planned_standing_share"] <= 1
    rows = [json.loads(x) for x in (tmp_path / "ev" / "episodes.jsonl").read_text().splitlines()]
    assert all(r["steps"] <= 15 and "realized_dx_mean" in r for r in rows)


def test_k_step_dreams_are_each_moments_own_open_loop_rollout(trained):
    from lemario.play.render import k_step_dreams

    model, _ = load_world_model(trained / "model.safetensors")
    latents, actions = torch.randn(9, model.cfg.latent_dim), torch.randint(0, 12, (8,))
    dreams = k_step_dreams(model, latents, actions, 3)
    assert torch.isnan(dreams[:3]).all()
    before = torch.cat([torch.zeros(1, dtype=actions.dtype), actions])
    for t in range(3, 9):
        one = model.rollout(latents[None, t - 3 : t - 2], actions[None, t - 3 : t], before[None, t - 3])[0, -1]
        assert torch.allclose(dreams[t], one, atol=1e-5)


def test_render_a_world_model_agent_with_its_drift_strip_and_dreams(trained, corpus, tmp_path):
    from lemario.model.decoder import DecoderConfig, train_decoder
    from lemario.play.render import RenderConfig, render

    model = trained / "model.safetensors"
    train_decoder(DecoderConfig(model, corpus=corpus, steps=20, width=8, out=tmp_path / "dec"))
    cfg = RenderConfig(agent="biased", episodes=1, env=EnvConfig(max_steps=20), drift_k=5, out=tmp_path / "r")
    s = render(replace(cfg, world_model=model, decoder=tmp_path / "dec" / "decoder.safetensors"))
    assert s["mean_drift"] is not None and s["mean_drift"] >= 0
    assert (tmp_path / "r" / "best.mp4").stat().st_size > 0 and (tmp_path / "r" / "render.json").exists()
    assert (tmp_path / "r" / "dreams.png").exists() and (tmp_path / "r" / "dream_long.png").exists()
    plain = render(replace(cfg, out=tmp_path / "plain"))  # no world model: no strip, no dreams
    assert plain["mean_drift"] is None and not (tmp_path / "plain" / "dreams.png").exists()


def test_imagine_cli_then_evaluate_the_policy(trained, corpus, tmp_path):
    r = run_cli(
        "imagine",
        "--preset",
        "tiny",
        "--world-model",
        str(trained / "model.safetensors"),
        "--corpus",
        str(corpus),
        "--out",
        str(tmp_path / "pi"),
        "--no-progress",
    )
    assert r.returncode == 0, r.stderr
    tensors, meta = checkpoint.load(tmp_path / "pi" / "policy.safetensors", kind="policy")
    assert meta["updates"] == 20 and meta["world_model"].endswith("model.safetensors")
    # the synthetic corpus takes actions 0-4 only: the policy may choose those alone, and says so
    wm_meta = checkpoint.load_meta(trained / "model.safetensors")
    taken = EpisodeBuffer.load(corpus).actions
    assert wm_meta["action_counts"] == np.bincount(taken[taken >= 0], minlength=wm_meta["config"]["n_actions"]).tolist()
    assert meta["config"]["actions"] == [0, 1, 2, 3, 4]
    ac, _, _ = load_policy(tmp_path / "pi" / "policy.safetensors")
    probs = ac.dist(torch.randn(32, ac.actor.net[0].in_features)).probs  # (32, A)
    assert (probs[:, 5:] == 0).all() and torch.allclose(probs.sum(-1), torch.ones(32))
    rows = [json.loads(x) for x in (tmp_path / "pi" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and "imag/return" in rows[0]
    from lemario.play.evaluate import EvalConfig, evaluate

    s = evaluate(
        EvalConfig(
            agents=(f"policy:{tmp_path / 'pi' / 'policy.safetensors'}",),
            episodes=2,
            workers=1,
            env=EnvConfig(max_steps=20),
            out=tmp_path / "ev",
        )
    )
    assert next(iter(s["per_agent"].values()))["episodes"] == 2
    with pytest.raises(LemarioError, match="'world_model' checkpoint, expected 'policy'"):
        evaluate(
            EvalConfig(agents=(f"policy:{trained / 'model.safetensors'}",), episodes=1, workers=1, out=tmp_path / "x")
        )
    # the planner with the policy's critic as its value beyond the horizon
    from lemario.control.planner import LatentPlanner, PlannerConfig, critic_value, planning_policy, policy_proposals
    from lemario.games.mario.actions import action_set

    policy = tmp_path / "pi" / "policy.safetensors"
    model, _ = load_world_model(trained / "model.safetensors")
    value = critic_value(planning_policy(policy, model), model)
    cfg = PlannerConfig(horizon=4, precision="fp32")
    with_value, without = (LatentPlanner(model, cfg, action_set("complex"), v) for v in (value, None))
    seqs = torch.randint(0, model.cfg.n_actions, (8, 4), generator=torch.Generator().manual_seed(0))
    context, past = torch.randn(1, 1, model.cfg.latent_dim), torch.zeros(1, 1, dtype=torch.int64)
    z, r = without.rewards(context, past, seqs)
    v = value(z[:, -1], seqs[:, -1])
    assert v.shape == (8,) and v.std() > 0
    alive = ((1 - r[..., 2]) * (1 - r[..., 3])).prod(-1)  # the value counts as much as the horizon's end still running
    torch.testing.assert_close(
        with_value.objective(context, past)(seqs)[0] - without.objective(context, past)(seqs)[0], 0.99**4 * alive * v
    )
    flat = PlannerConfig(horizon=4, precision="fp32", survival=False)
    with_value, without = (LatentPlanner(model, flat, action_set("complex"), x) for x in (value, None))
    torch.testing.assert_close(
        with_value.objective(context, past)(seqs)[0] - without.objective(context, past)(seqs)[0], 0.99**4 * v
    )
    # the planner started from the policy: its sequences are candidates, so the plan scores at least their best
    ac = planning_policy(policy, model)
    proposals = policy_proposals(ac, model, samples=6, horizon=4)
    prior = PlannerConfig(
        horizon=4,
        samples=16,
        elites=4,
        iterations=2,
        precision="fp32",
        prior="policy",
        value=str(policy),
        policy_samples=6,
    )
    planner = LatentPlanner(model, prior, action_set("complex"), value, None, proposals)
    g = torch.Generator().manual_seed(3)
    proposed = proposals(context, past, torch.Generator().manual_seed(3))
    assert proposed.shape == (6, 4) and ac.allowed[proposed].all()
    _, score, _ = planner.plan(context, past, g)
    assert score >= float(planner.objective(context, past)(proposed)[0].max()) - 1e-5
    for name, prior in (("pv", "biased"), ("pp", "policy")):  # the critic beyond the horizon; and the policy prior
        budget = PlannerConfig(samples=16, elites=4, iterations=1, horizon=4, value=str(policy), policy_samples=8)
        s = evaluate(
            EvalConfig(
                agents=(f"planner:{trained / 'model.safetensors'}",),
                episodes=1,
                workers=1,
                env=EnvConfig(max_steps=12),
                out=tmp_path / name,
                planner=replace(budget, prior=prior),
            )
        )
        assert next(iter(s["per_agent"].values()))["episodes"] == 1
    tensors, meta = checkpoint.load(trained / "model.safetensors")
    tensors = {k: (t + 0.01 if k.startswith("predictor.") and t.is_floating_point() else t) for k, t in tensors.items()}
    checkpoint.save(tmp_path / "other.safetensors", tensors, meta)
    with pytest.raises(LemarioError, match="trained on another world model"):
        evaluate(
            EvalConfig(
                agents=(f"planner:{tmp_path / 'other.safetensors'}",),
                episodes=1,
                workers=1,
                out=tmp_path / "pw",
                planner=PlannerConfig(value=str(policy)),
            )
        )


def _level_batch(g: torch.Generator, cfg, n: int = 32) -> dict[str, torch.Tensor]:
    """Two levels whose frames look alike (noise) and whose one step moves Mario +8 px on 1-1 and -8 px on 2-1:
    only the level tells them apart."""
    level = torch.where(torch.rand(n, generator=g) < 0.5, 1, 5)  # 1-1 and 2-1 (`level_index`)
    rewards = torch.zeros(n, 1, 4)
    rewards[:, 0, 0] = torch.where(level == 1, 8.0, -8.0)
    obs = torch.randint(0, 256, (n, 2, cfg.frame_stack, cfg.image_size, cfg.image_size), generator=g).to(torch.uint8)
    zeros = torch.zeros(n, 1, dtype=torch.int64)
    return {"obs": obs, "actions": zeros, "prev": zeros[:, 0], "rewards": rewards, "level": level}


def test_a_level_conditioned_model_tells_levels_apart_and_plays_unseen_ones_as_unknown(tmp_path):
    """Known answer: with the level's vector the reward head predicts each level's own progress (+8 / -8 px);
    without it only their mean (0). A level the model never trained on (or none) reads the unknown vector, which
    the hidden windows (level dropout) train to that mean; the vectors and the levels seen survive a checkpoint."""
    progress = {}
    for conditioned in (False, True):
        torch.manual_seed(0)
        cfg = replace(TINY, level_embedding=conditioned, pred_dropout=0.0, frame_stack=1, image_size=36)
        model = WorldModel(cfg)
        model.see_levels([1, 5])
        opt = torch.optim.Adam(model.parameters(), lr=3e-3)
        g, loss_cfg = torch.Generator().manual_seed(1), LossConfig(sigreg_projections=16, sigreg_lambda=0.0)
        for _ in range(300):
            loss, _ = world_model_loss(model, _level_batch(g, cfg), loss_cfg, g)
            opt.zero_grad()
            loss.backward()
            opt.step()
        recalibrate_batchnorm(model, ((i, _level_batch(g, cfg)) for i in range(8)), loss_cfg)
        if conditioned:
            checkpoint.save(
                tmp_path / "m.safetensors", model.state_dict(), {"kind": "world_model", "config": asdict(cfg)}
            )
            model, _ = load_world_model(tmp_path / "m.safetensors")
            assert model.levels_seen.nonzero().flatten().tolist() == [1, 5]
        model.eval()
        batch = _level_batch(g, cfg, 64)
        obs, zeros = batch["obs"], torch.zeros(64, 1, dtype=torch.int64)
        with torch.no_grad():
            for name, level in (("1-1", 1), ("2-1", 5), ("4-1 (never seen)", 13), ("none", None)):
                z = model.encode(obs, None if level is None else torch.full((64,), level))  # (64, 2, D)
                out = decode_reward(model.reward(model.rollout(z[:, :1], zeros, zeros[:, 0]), zeros))
                progress[conditioned, name] = out[:, 0, 0].mean().item()
    assert abs(progress[True, "1-1"] - 8) < 2 and abs(progress[True, "2-1"] + 8) < 2, progress
    assert (
        abs(progress[True, "4-1 (never seen)"]) < 2.5 and progress[True, "none"] == progress[True, "4-1 (never seen)"]
    )
    assert all(abs(progress[False, name]) < 2.5 for name in ("1-1", "2-1", "none")), progress
