"""The LeWorldModel analyses: straightening and surprise, from hand-computed statistics on synthetic trajectories
up to the commands on tiny trained models; the perturbations change exactly what they claim to."""

import json
import os
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from lemario.analysis.straightening import straightness, weight_files
from lemario.analysis.surprise import (
    MARIO_TELEPORT_PX,
    PUSH_TELEPORT_UNITS,
    RecolourableMario,
    push_branches,
    surprise,
    teleport_mario,
)
from lemario.core import checkpoint
from lemario.games.mario.env import EnvConfig
from lemario.games.mario.ram import info_from_ram
from lemario.games.push.board import T_POS
from lemario.games.push.env import PushConfig
from lemario.model.decoder import Decoder, fit_decoder, load_decoder
from lemario.model.train import PRESETS, train
from lemario.play.push_data import PushDataConfig, generate

from conftest import run_cli
from synthetic import write_corpus


def test_straightness_of_a_line_a_zigzag_and_a_random_walk():
    t = torch.arange(10.0)[:, None]
    line = t * torch.tensor([1.0, 2.0, -0.5])  # (10, 3)
    zigzag = torch.stack([t[:, 0] % 2, torch.zeros(10)], dim=-1)  # 0, 1, 0, 1, ...: each step reverses the last
    assert straightness(line).item() == pytest.approx(1.0)
    assert straightness(zigzag).item() == pytest.approx(-1.0)
    walk = torch.randn(500, 200, 16, generator=torch.Generator().manual_seed(0)).cumsum(1)
    assert abs(straightness(walk).mean().item()) < 0.02  # independent steps: uncorrelated velocities
    assert straightness(torch.stack([line, line])).shape == (2,)


class _LinearWorld:
    """A world model whose truth is known: frames are (position, colour); the encoder keeps the position only and
    the predictor knows the dynamics (position += 1 per step)."""

    frame_dims = 2  # (stack, channels): single frames get a stack of one

    def encode(self, obs: torch.Tensor) -> torch.Tensor:  # (T+1, 1, 2) -> (T+1, 1)
        return obs[:, 0, :1].float()

    def teacher_forced(self, emb, actions, prev):  # (1, T+1, 1) -> (1, T, 1)
        return emb[:, :-1] + 1.0


def test_surprise_spikes_at_a_teleport_and_ignores_a_channel_the_model_ignores():
    obs = np.stack([np.arange(12.0), np.zeros(12)], axis=-1)  # (12, 2): moving at 1 per step, colour 0
    actions = np.zeros(11)
    calm = surprise(_LinearWorld(), obs, actions)
    assert np.isnan(calm[0]) and np.allclose(calm[1:], 0)
    teleported = obs.copy()
    teleported[6:, 0] += 5  # the position jumps between steps 5 and 6
    s = surprise(_LinearWorld(), teleported, actions)
    assert s[6] == pytest.approx(25.0) and np.allclose(np.delete(s[1:], 5), 0)
    recoloured = obs.copy()
    recoloured[6:, 1] += 100  # a constant offset in the channel the encoder drops
    assert np.allclose(surprise(_LinearWorld(), recoloured, actions)[1:], 0)


@pytest.fixture(scope="module")
def mario_env():
    env = RecolourableMario(EnvConfig(max_steps=200))
    yield env
    env.close()


def _play(env, actions):
    rams, frames = [], []
    for a in actions:
        obs, *_ = env.step(a)
        rams.append(env.ram.copy())
        frames.append(obs[-1])
    return np.stack(rams), np.stack(frames)


def test_recolouring_changes_the_frames_and_keeps_the_ram(mario_env):
    mario_env.reset(seed=0)
    _play(mario_env, [3] * 12)  # run right
    saved = mario_env.save_state()
    actions = [3, 3, 5, 5, 3, 0]
    ram, frames = _play(mario_env, actions)
    mario_env.reset(options={"state": saved})
    mario_env.recoloured = True
    try:
        ram_c, frames_c = _play(mario_env, actions)
    finally:
        mario_env.recoloured = False
    assert np.array_equal(ram, ram_c)
    assert np.abs(frames.astype(int) - frames_c).mean() > 5


def test_the_teleport_moves_mario_along_the_level_and_nothing_else(mario_env):
    mario_env.reset(seed=0)
    _play(mario_env, [3] * 12)
    saved = mario_env.save_state()
    ram, _ = _play(mario_env, [0])
    mario_env.reset(options={"state": saved})
    teleport_mario(mario_env)
    ram_t, _ = _play(mario_env, [0])
    a, b = info_from_ram(ram[0]), info_from_ram(ram_t[0])
    assert b["x_pos"] - a["x_pos"] == MARIO_TELEPORT_PX
    assert (a["y_pos"], a["lives"], a["world"], a["time"]) == (b["y_pos"], b["lives"], b["world"], b["time"])


def test_push_branches_teleport_the_t_and_recolour_the_same_board():
    got = push_branches(PushConfig(), seed=3, t0=12, steps=20)
    none, physical, cosmetic = got["none"], got["physical"], got["cosmetic"]
    assert np.array_equal(none["state"], cosmetic["state"]) and np.array_equal(none["actions"], physical["actions"])
    assert np.array_equal(none["obs"][:13], cosmetic["obs"][:13]) and not np.array_equal(
        none["obs"][13], cosmetic["obs"][13]
    )
    assert np.array_equal(none["obs"][:13], physical["obs"][:13])
    jump = np.linalg.norm(physical["state"][13, T_POS] - none["state"][13, T_POS])
    assert abs(jump - PUSH_TELEPORT_UNITS) < 15  # the teleport, give or take one step of motion


@pytest.fixture(scope="module")
def mario_run(tmp_path_factory) -> Path:
    corpus = write_corpus(tmp_path_factory.mktemp("syn") / "corpus", episodes=8, steps=30)
    out = tmp_path_factory.mktemp("wm") / "run"
    cfg = replace(PRESETS["tiny"], corpus=corpus, out=out, steps=20, val_every=10, snapshot_every=10, progress=False)
    train(replace(cfg, tensorboard=False))
    return out


def test_straightening_along_a_trainings_snapshots(mario_run):
    label, files = weight_files(mario_run)
    assert label == "training step" and [s for s, _ in files] == [10, 20]  # the last snapshot is the final model
    corpus = json.loads((mario_run / "config.json").read_text())["config"]["corpus"]
    r = run_cli("analyze", "straightening", str(mario_run), "--corpus", corpus, "--windows", "16", "--length", "8")
    assert r.returncode == 0, r.stderr
    rows = json.loads((mario_run / "analysis" / "straightening.json").read_text())["rows"]
    assert [row["x"] for row in rows] == [10, 20]
    assert all(-1 <= row[k] <= 1 for row in rows for k in ("real", "predicted"))
    assert all(row["seconds"] > 0 for row in rows)  # each analysis reports its own cost
    assert (mario_run / "analysis" / "straightening.png").stat().st_size > 0
    # again: nothing new to measure; a rewritten weight file or other settings are measured anew
    os.utime(files[0][1])  # the step-10 snapshot, written after the measurement
    r = run_cli("analyze", "straightening", str(mario_run), "--corpus", corpus, "--windows", "16", "--length", "8")
    assert r.returncode == 0 and r.stdout.count("(measured before)") == 1, r.stdout
    again = json.loads((mario_run / "analysis" / "straightening.json").read_text())["rows"]
    assert again[1] == rows[1] and again[0]["weights"] == rows[0]["weights"]
    assert again[0]["real"] == pytest.approx(rows[0]["real"])  # the same windows measured again
    figure = mario_run.parent / "new" / "folder"
    args = ("--windows", "8", "--length", "8", "--out", str(figure))
    r = run_cli("analyze", "straightening", str(mario_run), "--corpus", corpus, *args)
    assert r.returncode == 0 and "(measured before)" not in r.stdout, r.stdout + r.stderr[-2000:]
    assert (figure / "straightening.png").exists() and (figure / "straightening-all.json").exists()
    r = run_cli("analyze", "straightening", str(mario_run.parent), "--corpus", corpus)
    assert r.returncode == 2 and "holds no world model" in r.stderr


def test_weight_files_of_a_flywheel_are_its_iterations_world_models(mario_run, tmp_path):
    for n in (1, 2, 3):  # iteration 3 has not trained its world model yet
        wm = tmp_path / f"iter{n:03d}" / "wm"
        wm.mkdir(parents=True)
        if n < 3:
            for suffix in (".safetensors", ".json"):
                shutil.copy((mario_run / "model").with_suffix(suffix), (wm / "model").with_suffix(suffix))
    label, files = weight_files(tmp_path)
    assert label == "flywheel iteration" and [n for n, _ in files] == [1, 2]


def test_surprise_command_on_mario(mario_run, tmp_path):
    model = mario_run / "model.safetensors"
    r = run_cli(
        "analyze", "surprise", str(model), "--episodes", "3", "--t0", "6", "--after", "3", "--threads", "1",
        "--out", str(tmp_path),
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    result = json.loads((tmp_path / "surprise.json").read_text())
    assert result["episodes"] == 3 and set(result["tests"]) == {"physical", "cosmetic"}
    assert len(result["curves"]["none"]["mean"]) == 10 and (tmp_path / "surprise.png").exists()
    assert result["seconds"] > 0
    r = run_cli("analyze", "surprise", str(model), "--game", "push", "--out", str(tmp_path))
    assert r.returncode == 2 and "not a push world model" in r.stderr


def test_surprise_command_on_push(tmp_path):
    corpus = tmp_path / "data"
    generate(PushDataConfig(out=corpus, episodes=6, turns=2, workers=1, progress=False))
    train(
        replace(PRESETS["push-tiny"], corpus=corpus, out=tmp_path / "wm", steps=10, progress=False, tensorboard=False)
    )
    args = ["--game", "push", "--episodes", "4", "--t0", "10", "--after", "4"]
    r = run_cli("analyze", "surprise", str(tmp_path / "wm" / "model.safetensors"), *args)
    assert r.returncode == 0, r.stderr
    result = json.loads((tmp_path / "wm" / "analysis" / "surprise.json").read_text())
    cosmetic = np.array(result["curves"]["cosmetic"]["mean"][1:11], float)
    assert np.allclose(cosmetic, np.array(result["curves"]["none"]["mean"][1:11], float))  # identical before t0 + 1


def test_the_decoder_overfits_a_handful_of_frames():
    frames = torch.zeros(6, 1, 64, 64)
    for i in range(6):  # a 16 px square in six places
        frames[i, 0, 8 * i : 8 * i + 16, 44 - 8 * i : 60 - 8 * i] = 1.0
    z = torch.randn(6, 32, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    decoder = Decoder(32, 64, 1, width=16)
    curve, steps = fit_decoder(decoder, z, frames, steps=300, batch=6, lr=3e-3, seed=0)
    assert decoder(z).shape == (6, 1, 64, 64) and steps == 300
    assert curve[-1] < 0.05 * curve[0]  # ~0.25 (the sigmoid's grey start) down to a copy
    _, steps = fit_decoder(decoder, z, frames, steps=10**6, batch=6, lr=3e-3, seed=0, minutes=0.02)
    assert 0 < steps < 10**6  # a time budget ends the fit (and its schedule) before the steps would


def test_decoder_command_beats_the_mean_frame_and_leaves_the_world_model_alone(mario_run, tmp_path):
    model = mario_run / "model.safetensors"
    before = {k: v.clone() for k, v in checkpoint.load(model)[0].items()}
    corpus = json.loads((mario_run / "config.json").read_text())["config"]["corpus"]
    args = ["--corpus", corpus, "--steps", "200", "--width", "8", "--threads", "1", "--out", str(tmp_path)]
    r = run_cli("analyze", "decoder", str(model), *args)
    assert r.returncode == 0, r.stderr
    result = json.loads((tmp_path / "decoder.json").read_text())["result"]
    assert result["mse"]["decoder"] < result["mse"]["mean_frame"]
    assert result["seconds"] >= result["train_seconds"] > 0
    after = checkpoint.load(model)[0]
    assert all(torch.equal(before[k], after[k]) for k in before)
    decoder, wm = load_decoder(tmp_path / "decoder.safetensors")
    assert decoder(torch.zeros(2, wm.cfg.latent_dim)).shape == (2, 1, 84, 84)
    assert (tmp_path / "decoder.png").stat().st_size > 0
