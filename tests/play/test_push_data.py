"""The push data generator: turn structure, regimes, the corpus round trip, resume and refusal."""

from collections import Counter
from dataclasses import replace

import numpy as np
import pytest

from lemario.core.errors import LemarioError
from lemario.core.files import read_json, write_json
from lemario.data.buffer import EpisodeBuffer
from lemario.data.corpus import read_episode, scan
from lemario.games.push.board import STATE_DIM, STATE_NAMES, clip_thrust
from lemario.games.push.env import PushConfig
from lemario.games.push.opponents import adversarial, chase_t
from lemario.games.push.regimes import NOISE, REGIMES, SHARES, Turn, draw_regime
from lemario.model.train import PRESETS
from lemario.model.trainer import check_model_fits
from lemario.play.push_data import PushDataConfig, episode_seed, generate, generate_episode


def test_episodes_keep_the_turn_structure_of_play():
    game = PushConfig(turns=3, steps_per_turn=4)
    ep = generate_episode(game, episode_seed(0, 1))
    assert ep.frames.shape == (25, 64, 64, 3) and ep.actions.shape == (24, 4) and ep.labels.shape == (25, STATE_DIM)
    acting = np.abs(ep.actions).reshape(24, 2, 2).sum(-1) > 0  # (T, 2): which disc got a thrust
    for t in range(24):
        actor = (t // 4) % 2
        assert not acting[t, 1 - actor]  # the idle disc never gets one
    assert [turn["actor"] for turn in ep.meta["turns"]] == ["amber", "cyan"] * 3
    for i, turn in enumerate(ep.meta["turns"]):  # a null-thrust turn is all zeros, any other moves its disc
        moving = acting[4 * i : 4 * i + 4, i % 2]
        assert moving.all() if turn["regime"] != "null_thrust" else not moving.any()
    assert np.array_equal(ep.frames, generate_episode(game, episode_seed(0, 1)).frames)  # determined by its seed


def test_a_disc_keeps_its_turn_with_probability_persist():
    game = PushConfig(turns=4, steps_per_turn=2)
    kept, fresh = [], []
    for i in range(60):
        turns = generate_episode(game, episode_seed(0, i), persist=0.75).meta["turns"]
        for k, turn in enumerate(turns):
            if k < 2:  # each disc's first turn has nothing to keep
                assert not turn["kept"]
                continue
            same = turn["regime"] == turns[k - 2]["regime"] and turn["target"] == turns[k - 2]["target"]
            (kept if turn["kept"] else fresh).append(same)
    assert all(kept) and abs(len(kept) / (len(kept) + len(fresh)) - 0.75) < 0.06  # 360 turns
    assert not any(t["kept"] for t in generate_episode(game, episode_seed(0, 1)).meta["turns"])  # persist 0


def test_regimes_are_drawn_with_the_seeds_shares():
    rng = np.random.default_rng(0)
    counts = Counter(draw_regime(rng) for _ in range(20_000))
    for regime, share in zip(REGIMES, SHARES):
        assert abs(counts[regime] / 20_000 - share) < 0.015


def test_the_scripted_pushers_regimes_leave_the_seeds_draws_as_they_were():
    """The two regimes past the seed's five have share 0 by default: every draw is the one a five-regime mix makes,
    so corpora generated before they existed replay."""
    a, b = np.random.default_rng(1), np.random.default_rng(1)
    seed_mix = np.array(SHARES[:5]) / sum(SHARES[:5])
    assert [draw_regime(a) for _ in range(500)] == [REGIMES[b.choice(5, p=seed_mix)] for _ in range(500)]
    assert set(REGIMES[5:]) == {"chase_t", "adversarial"} and SHARES[5:] == (0.0, 0.0)


@pytest.mark.parametrize("name, rule", [("chase_t", chase_t), ("adversarial", adversarial)])
def test_a_pusher_regime_plays_the_scripted_rule_with_the_regimes_noise(name, rule):
    ep = generate_episode(PushConfig(turns=1), episode_seed(0, 7))
    state = ep.labels[0].astype(np.float64)  # a start where the two pushers' thrusts differ (at many they agree)
    for me in (0, 1):
        assert np.abs(chase_t(state, me) - adversarial(state, me)).max() > 0.01
        turn, noise = Turn(name, state, me, np.random.default_rng(7)), np.random.default_rng(7)
        assert turn.target is None
        noise.uniform(0, 2 * np.pi)  # a turn's first draw: the direction the target-taking regimes use
        expected = clip_thrust(rule(state, me) + noise.normal(0, NOISE, 2))
        np.testing.assert_allclose(turn(state), expected, rtol=1e-6)


def test_shares_choose_the_regimes_and_a_bad_mix_is_refused(tmp_path):
    only_pushers = (0, 0, 0, 0, 0, 0.5, 0.5)
    turns = generate_episode(PushConfig(turns=10), episode_seed(0, 1), 0.0, only_pushers).meta["turns"]
    assert {t["regime"] for t in turns} == {"chase_t", "adversarial"}
    for bad in ((0.5, 0.5), (0.5, 0.5, 0.5, 0, 0, 0, 0), (1.5, -0.5, 0, 0, 0, 0, 0)):
        with pytest.raises(LemarioError, match="one share per regime"):
            PushDataConfig(out=tmp_path, shares=bad).validate()


def test_corpus_round_trip_resume_and_refusal(tmp_path):
    cfg = PushDataConfig(out=tmp_path / "push", episodes=4, turns=2, workers=1, progress=False)
    generate(cfg)
    index = scan(cfg.out)
    assert len(index.episodes) == 4 and {e["game"] for e in index.episodes} == {"push"}
    first = cfg.out / "push-00001.h5"
    ep = read_episode(first)
    assert ep.actions.dtype == np.float32 and ep.labels.dtype == np.float32 and ep.label_names == STATE_NAMES
    assert ep.rewards is None and ep.ram is None
    before = first.read_bytes()
    (cfg.out / "push-00002.h5").unlink()
    generate(cfg)  # writes exactly the missing episode
    assert first.read_bytes() == before and len(scan(cfg.out).episodes) == 4
    again = read_episode(cfg.out / "push-00002.h5")
    assert np.array_equal(again.frames, generate_episode(cfg.game, episode_seed(0, 2), cfg.persist).frames)
    with pytest.raises(LemarioError, match="seed: 0 -> 1"):
        generate(PushDataConfig(out=cfg.out, episodes=4, turns=2, seed=1, workers=1, progress=False))
    assert ep.meta["persist"] == 0.75 and len(ep.meta["turns"]) == 4
    assert EpisodeBuffer.load(cfg.out).game == "push"


def test_a_folder_from_before_persist_resumes_only_without_it(tmp_path):
    old = PushDataConfig(out=tmp_path / "old", episodes=1, turns=1, persist=0.0, workers=1, progress=False)
    generate(old)
    manifest = old.out / "config.json"
    stored = read_json(manifest)
    del stored["key"]["persist"], stored["key"]["shares"]  # as written before the fields existed
    write_json(manifest, stored)
    with pytest.raises(LemarioError, match="shares"):
        generate(replace(old, shares=(0.5, 0.25, 0.25, 0, 0, 0, 0), episodes=2))
    with pytest.raises(LemarioError, match="persist: 0.0 -> 0.75"):
        generate(replace(old, persist=0.75, episodes=2))
    generate(replace(old, episodes=2))  # the old behaviour resumes
    assert len(scan(old.out).episodes) == 2


def test_subpixel_frames_are_recorded_and_a_model_must_say_it_reads_them(tmp_path):
    fine, coarse = tmp_path / "fine", tmp_path / "coarse"
    for out, subpixel in ((fine, True), (coarse, False)):
        generate(PushDataConfig(out=out, episodes=2, turns=1, workers=1, progress=False, subpixel=subpixel))
    buffer = EpisodeBuffer.load(fine)
    assert buffer.subpixel and not EpisodeBuffer.load(coarse).subpixel
    ep = read_episode(sorted(fine.glob("push-*.h5"))[0])  # episode 0
    assert ep.meta["subpixel"] is True
    again = generate_episode(PushConfig(turns=1, subpixel=True), episode_seed(0, 0))
    plain = generate_episode(PushConfig(turns=1), episode_seed(0, 0))
    assert np.array_equal(again.frames, ep.frames) and np.array_equal(again.labels, plain.labels)  # same play
    assert not np.array_equal(again.frames, plain.frames)  # drawn otherwise
    model = PRESETS["push-tiny"].model
    with pytest.raises(LemarioError, match="pass --model.subpixel"):
        check_model_fits(model, buffer)
    check_model_fits(replace(model, subpixel=True), buffer)
    (coarse / next(fine.glob("push-*.h5")).name).write_bytes(next(fine.glob("push-*.h5")).read_bytes())
    with pytest.raises(LemarioError, match="mixes frames drawn with and without --subpixel"):
        EpisodeBuffer.load(coarse)


def test_noise_sets_how_far_a_regimes_thrust_strays_from_its_steering(tmp_path):
    state = generate_episode(PushConfig(turns=1), episode_seed(0, 7)).labels[0].astype(np.float64)
    steer = Turn("chase_t", state, 0, np.random.default_rng(3), noise=0.0)(state)
    assert np.array_equal(steer, clip_thrust(chase_t(state, 0)).astype(np.float32))  # noise 0: the rule's thrust
    strays = {}
    for noise in (NOISE, 0.5):
        turns = [Turn("far_from_t", state, 0, np.random.default_rng(i), noise=noise) for i in range(300)]
        quiet = [Turn("far_from_t", state, 0, np.random.default_rng(i), noise=0.0) for i in range(300)]
        strays[noise] = np.std([t(state) - q(state) for t, q in zip(turns, quiet)])  # the same targets, noise apart
    assert strays[0.5] > 2 * strays[NOISE]  # clipped to the thrust disc, so less than 0.5 / 0.15 apart
    cfg = PushDataConfig(out=tmp_path / "noisy", episodes=1, turns=1, workers=1, progress=False, noise=0.5)
    generate(cfg)
    assert read_episode(cfg.out / "push-00000.h5").meta["noise"] == 0.5
    with pytest.raises(LemarioError, match="noise: 0.5 -> 0.15"):
        generate(replace(cfg, noise=NOISE, episodes=2))
    with pytest.raises(LemarioError, match="--noise 1.5"):
        replace(cfg, noise=1.5).validate()
