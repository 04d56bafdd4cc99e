"""The Gymnasium API, determinism, frame preprocessing and states of SuperMarioBros."""

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from lemario.core.errors import LemarioError
from lemario.games.mario.actions import ACTION_SETS
from lemario.games.mario.env import EnvConfig, SuperMarioBros


def rollout(env, actions, seed=0):
    obs, info = env.reset(seed=seed)
    out = [(obs, info)]
    for a in actions:
        obs, r, term, trunc, info = env.step(a)
        out.append((obs, info, r, term, trunc))
        if term or trunc:
            break
    return out


def test_gymnasium_api(make_env):
    env = make_env(max_steps=50)
    check_env(env, skip_render_check=True)
    obs, info = env.reset(seed=1)
    assert obs.shape == (4, 84, 84) and obs.dtype == np.uint8
    assert env.observation_space.contains(obs)
    assert {
        "x_pos",
        "y_pos",
        "x_vel",
        "y_vel",
        "on_ground",
        "is_dying",
        "lives",
        "score",
        "coins",
        "time",
        "powerup",
        "world",
        "stage",
        "flag_get",
    } <= set(info)
    assert info["x_pos"] == 40 and info["world"] == 1 and info["stage"] == 1 and info["time"] == 400


@pytest.mark.parametrize("name,n", [("right-only", 5), ("simple", 7), ("complex", 12)])
def test_action_sets(make_env, name, n):
    assert len(ACTION_SETS[name]) == n
    env = make_env(action_set=name, max_steps=5)
    assert env.action_space.n == n
    env.reset()
    with pytest.raises(ValueError):
        env.step(n)


def test_same_seed_same_episode(make_env):
    env = make_env(noop_max=8, max_steps=120)
    rng_actions = np.random.default_rng(0).integers(0, 12, 120).tolist()
    a = rollout(env, rng_actions, seed=3)
    b = rollout(env, rng_actions, seed=3)
    assert len(a) == len(b)
    for sa, sb in zip(a, b):
        np.testing.assert_array_equal(sa[0], sb[0])
        assert sa[1] == sb[1]
    starts = {env.reset(seed=s)[1]["steps"] for s in range(3)}  # noops do not count as episode steps
    assert starts == {0}
    frame_counters = set()
    for s in range(6):
        env.reset(seed=s)
        frame_counters.add(int(env.ram[0x09]))
    assert len(frame_counters) > 1, "noop_max should make seeds start at different moments"


def test_step_limit_truncates(make_env):
    env = make_env(max_steps=10)
    out = rollout(env, [0] * 20)
    assert len(out) == 11
    assert out[-1][4] is True and out[-1][3] is False


def test_observation_settings(make_env):
    env = make_env(resize=0, grayscale=False, frame_stack=2, frame_skip=3, max_steps=3)
    obs, _ = env.reset()
    assert obs.shape == (2, 224, 240, 3)
    obs, *_ = env.step(1)
    assert obs.shape == (2, 224, 240, 3)
    rgb = env.rgb_frame()
    assert rgb.shape == (224, 240, 3)
    # the observation's last frame is the max of the last two emulator frames: at least the raw last frame
    assert (obs[-1] >= rgb).all()


def test_frame_stack_shifts(make_env):
    env = make_env(max_steps=20)
    obs0, _ = env.reset()
    assert all((obs0[i] == obs0[0]).all() for i in range(4)), "the reset stack repeats the first frame"
    obs1, *_ = env.step(1)
    obs2, *_ = env.step(1)
    np.testing.assert_array_equal(obs2[:3], obs1[1:])


def test_save_and_restore_state(make_env):
    env = make_env(max_steps=400)
    actions = np.random.default_rng(1).choice([1, 2, 3, 4], 60).tolist()
    rollout(env, actions[:30])
    state = env.save_state()
    after = rollout_from(env, state, actions[30:])
    again = rollout_from(env, state, actions[30:])
    assert [i["x_pos"] for _, i, *_ in after] == [i["x_pos"] for _, i, *_ in again]
    np.testing.assert_array_equal(after[-1][0], again[-1][0])
    # the same state restored by replaying its button log on the reference backend
    ref = make_env(backend="nes-py", max_steps=400)
    replayed = rollout_from(ref, state, actions[30:])
    assert [i["x_pos"] for _, i, *_ in replayed] == [i["x_pos"] for _, i, *_ in after]
    np.testing.assert_array_equal(replayed[-1][0], after[-1][0])


def rollout_from(env, state, actions):
    obs, info = env.reset(options={"state": state})
    out = [(obs, info)]
    for a in actions:
        obs, r, term, trunc, info = env.step(a)
        out.append((obs, info))
        if term or trunc:
            break
    return out


def test_state_from_another_level_is_refused(make_env):
    env = make_env(max_steps=10)
    env.reset()
    state = env.save_state()
    state.level = "1-2"
    with pytest.raises(LemarioError, match="level 1-2"):
        env.reset(options={"state": state})


@pytest.mark.parametrize("level,world,stage", [("1-2", 1, 2), ("4-1", 4, 1), ("8-4", 8, 4)])
def test_any_level(make_env, level, world, stage):
    env = make_env(level=level, max_steps=5)
    _, info = env.reset()
    assert (info["world"], info["stage"]) == (world, stage)
    assert info["lives"] == 2 and info["time"] > 0


def test_life_loss_not_terminal_plays_on(make_env):
    env = make_env(life_loss_terminal=False, max_steps=400)
    env.reset()
    lives = []
    for _ in range(400):
        _, _, term, trunc, info = env.step(1)  # walk right into the first goomba, again and again
        lives.append(info["lives"])
        if term or trunc:
            break
    assert lives[0] == 2 and min(lives) < 2, "Mario should lose a life and keep playing"


def test_config_validation():
    for bad, match in [
        ({"level": "9-1"}, "unknown level"),
        ({"level": "one"}, "W-S"),
        ({"backend": "snes"}, "unknown backend"),
        ({"action_set": "all"}, "unknown action set"),
        ({"frame_skip": 1}, "frame_skip"),
        ({"rom": "/nonexistent/smb.nes"}, "ROM not found"),
    ]:
        with pytest.raises(LemarioError, match=match):
            SuperMarioBros(EnvConfig(**bad))
