"""The model-free baseline's reward shaping on scripted situations."""

import pytest

from lemario.baselines.shaping import ShapedReward, ShapingConfig

from conftest import scripted_actions

RIGHT, LEFT, NOOP = 1, 6, 0  # complex action set


def run(env, actions):
    _, info = env.reset()
    steps = [(0.0, info)]
    for a in actions:
        _, r, term, trunc, info = env.step(a)
        steps.append((r, info))
        if term or trunc:
            break
    return steps, term


def test_wagging_earns_nothing(make_env):
    env = ShapedReward(make_env(max_steps=400))
    steps, _ = run(env, [RIGHT] * 8 + ([LEFT] * 3 + [RIGHT] * 3) * 12)
    forward = sum(i["shaping"]["forward"] for _, i in steps[1:])
    xs = [i["x_pos"] for _, i in steps]
    assert forward == pytest.approx(0.15 * (max(xs) - xs[0]))
    wag = steps[9:]
    raw_gain = sum(max(0, b["x_pos"] - a["x_pos"]) for (_, a), (_, b) in zip(wag, wag[1:]))
    max_gain = max(i["x_pos"] for _, i in wag) - max(i["x_pos"] for _, i in steps[:9])
    assert raw_gain > 2 * max(max_gain, 1), "wagging moves Mario back and forth"
    assert sum(i["shaping"]["forward"] for _, i in wag) == pytest.approx(0.15 * max(max_gain, 0))
    assert sum(i["shaping"]["backward"] for _, i in wag) < 0, "and every step back costs"


def test_flag_bonus_paid_once_and_landmarks(make_env):
    env = ShapedReward(make_env(max_steps=2000))
    steps, term = run(env, scripted_actions("flag_1-1.txt"))
    parts = [i["shaping"] for _, i in steps[1:]]
    assert term and sum(p["flag"] for p in parts) == 200 and sum(p["flag"] > 0 for p in parts) == 1
    assert sum(p["hurdle"] for p in parts) == 5 * 10.0, "all five hurdles, once each"
    assert sum(p["milestone"] for p in parts) == pytest.approx(0.5 * (3161 // 50))
    assert sum(p["death"] for p in parts) == 0


def test_death_is_terminal_and_penalized(make_env):
    env = ShapedReward(make_env(max_steps=400), ShapingConfig(death_penalty=25.0))
    steps, term = run(env, [RIGHT] * 200)
    assert term and steps[-1][1]["is_dying"] == 1
    assert steps[-1][1]["shaping"]["death"] == -25.0
    assert all(i["shaping"]["death"] == 0 for _, i in steps[1:-1])


def test_stall_and_time_penalties(make_env):
    env = ShapedReward(make_env(max_steps=30), ShapingConfig(stall_steps=10, stall_penalty=1.0, time_penalty=0.02))
    steps, _ = run(env, [NOOP] * 30)
    stall = [i["shaping"]["stall"] for _, i in steps[1:]]
    assert stall[:9] == [0.0] * 9 and all(s == -1.0 for s in stall[9:])
    assert all(i["shaping"]["time"] == -0.02 for _, i in steps[1:])
