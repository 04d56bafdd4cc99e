"""Continuous CEM and the push game's planning cost and simulator planner."""

import math

import numpy as np
import pytest
import torch

from lemario.control.gaussian_cem import GaussianCEMConfig, gaussian_cem
from lemario.control.push_cost import around, to_front, turn_cost
from lemario.control.push_players import SimulatorPlanner, project_thrust, spread, warm_rule
from lemario.core.errors import LemarioError
from lemario.games.push.board import (
    DISC_SLICE,
    GOALS,
    STATE_DIM,
    T_POS,
    goal_distances,
    head_state,
    head_targets,
    random_start,
)
from lemario.games.push.env import PushGame
from lemario.games.push.opponents import chase_t


def test_cem_drives_a_quadratic_cost_to_its_minimum():
    target = torch.tensor([[0.3, -0.5], [0.8, 0.1], [-0.2, 0.6]])  # (H, A)
    plan = gaussian_cem(
        lambda a: ((a - target) ** 2).sum((1, 2)), 3, 2, GaussianCEMConfig(samples=200, iterations=10),
        torch.Generator().manual_seed(0),
    )  # fmt: skip
    assert plan.cost < 1e-3 and torch.allclose(plan.actions, target, atol=0.03)
    assert len(plan.history) == 10 and plan.history[0].actions.shape == (200, 3, 2)
    assert plan.history[-1].costs.median() < plan.history[0].costs.median() / 20  # the samples close in


def test_cem_respects_the_projection_and_its_config_checks():
    cfg = GaussianCEMConfig(iterations=10)
    plan = gaussian_cem(lambda a: -(a[..., 0]).sum(1), 4, 2, cfg, torch.Generator().manual_seed(1), project_thrust)
    assert plan.actions.norm(dim=-1).max() <= 1 + 1e-6 and plan.actions[:, 0].min() > 0.9  # full thrust along +x
    with pytest.raises(LemarioError, match="elite_frac"):
        GaussianCEMConfig(elite_frac=0).validate()


def test_a_warm_start_is_scored_as_it_is():
    target = torch.tensor([[0.3, -0.5], [0.8, 0.1]])  # (H, A)
    cost = lambda a: ((a - target) ** 2).sum((1, 2))  # noqa: E731
    cfg = GaussianCEMConfig(samples=8, iterations=1)
    warm = gaussian_cem(cost, 2, 2, cfg, torch.Generator().manual_seed(0), mean=target)
    cold = gaussian_cem(cost, 2, 2, cfg, torch.Generator().manual_seed(0))
    assert warm.cost == 0.0 and torch.equal(warm.actions, target) and torch.equal(warm.history[0].actions[0], target)
    assert cold.cost > 0.01
    # one sample: the warm start played unsearched, whatever its cost
    away = torch.zeros(2, 2)
    alone = gaussian_cem(
        cost, 2, 2, GaussianCEMConfig(samples=1, iterations=1), torch.Generator().manual_seed(0), mean=away
    )
    assert torch.equal(alone.actions, away) and alone.cost == pytest.approx(cost(away[None]).item())
    with pytest.raises(LemarioError, match="samples 0"):
        GaussianCEMConfig(samples=0).validate()


def test_head_state_reads_positions_angle_and_velocities():
    before = random_start(np.random.default_rng(3))
    vel, spin = np.array([[30.0, -20.0], [0.0, 50.0], [10.0, 5.0]]), 0.4
    now = before.copy()
    for i, sl in enumerate((*DISC_SLICE, T_POS)):
        now[sl] = before[sl] + vel[i] * 0.1  # one env step is 0.1 s
    now[10] = before[10] + spin * 0.1
    state = head_state(head_targets(now), head_targets(before))
    assert np.allclose(state[[0, 1, 4, 5, 8, 9, 10]], now[[0, 1, 4, 5, 8, 9, 10]], atol=1e-3)
    assert np.allclose(state[[2, 3, 6, 7, 11, 12]], vel.ravel(), atol=0.05) and state[13] == pytest.approx(
        spin, abs=1e-3
    )
    alone = head_state(head_targets(now))
    assert not alone[[2, 3, 6, 7, 11, 12, 13]].any()  # one reading: no velocities
    with pytest.raises(LemarioError, match="unknown warm start 'passive'"):
        warm_rule("passive")


def test_around_known_answers():
    r = 10.0
    p, q = torch.tensor([-2 * r, 0.0]), torch.tensor([2 * r, 0.0])  # opposite sides: two tangents and an arc
    assert float(around(p, q, r)) == pytest.approx(2 * math.sqrt(3) * r + r * math.pi / 3, rel=1e-5)
    p, q = torch.tensor([-20.0, 15.0]), torch.tensor([20.0, 15.0])  # the segment passes above the circle
    assert float(around(p, q, r)) == pytest.approx(40.0)


def test_turn_cost_prefers_the_pushing_side():
    t, goal = torch.tensor([256.0, 256.0]), torch.as_tensor(GOALS[0])  # amber pushes toward the left
    behind, front = torch.tensor([332.0, 256.0]), torch.tensor([180.0, 256.0])  # both 76 from the T
    assert turn_cost(behind, t, goal) < turn_cost(front, t, goal) - 100
    assert turn_cost(front, t, goal, "seed") == turn_cost(behind, t, goal, "seed")  # the seed's cost cannot tell
    # to_front: 11 past the pushing point (321, 256); from the far side, two tangents and an arc round the T
    assert float(to_front(behind, t, goal)) == pytest.approx(11.0)
    tangents = math.sqrt(76**2 - 55**2) + math.sqrt(65**2 - 55**2)
    arc = 55 * (math.pi - math.acos(55 / 76) - math.acos(55 / 65))
    assert float(to_front(front, t, goal)) == pytest.approx(tangents + arc, rel=1e-5)
    assert float(turn_cost(behind, t, goal)) == pytest.approx(11.0 + 2 * (256 - 24))
    with pytest.raises(LemarioError, match="cost"):
        turn_cost(front, t, goal, "greedy")


def test_simulator_planner_pushes_the_t_further_than_chase_t():
    state = np.zeros(STATE_DIM, np.float32)
    state[T_POS] = (256, 256)
    state[0:2], state[4:6] = (340, 256), (460, 60)  # amber already behind the T, cyan out of the way
    planner = SimulatorPlanner(cfg=GaussianCEMConfig(samples=48, iterations=3), seed=0)
    progress = {}
    for name, player in (("planner", planner), ("chase_t", lambda seen: chase_t(seen.state, seen.me))):
        env = PushGame()
        env.reset(options={"state": state})
        for _ in range(5):  # one turn
            _, _, _, _, info = env.step(player(env.seen()))
        progress[name] = goal_distances(state)[0] - goal_distances(info["state"])[0]
    assert progress["planner"] > progress["chase_t"] > 5
    assert len(planner.last.history) == 3 and not planner.queue  # one plan per turn, played out


def test_a_warm_started_simulator_planner_starts_from_the_rule_and_does_no_worse():
    state = np.zeros(STATE_DIM, np.float32)
    state[T_POS] = (256, 256)
    state[0:2], state[4:6] = (256, 120), (460, 60)  # amber beside the T: chase_t must go round
    env = PushGame()
    env.reset(options={"state": state})
    rule = []
    for _ in range(5):
        rule.append(chase_t(env.seen().state, 0))
        _, _, _, _, info = env.step(rule[-1])
    planner = SimulatorPlanner(cfg=GaussianCEMConfig(samples=16, iterations=2), seed=0, warm="chase_t")
    plan = planner.plan(state, 0)
    assert torch.allclose(plan.actions.new_tensor(np.array(rule)), plan.history[0].actions[0], atol=1e-5)
    end = info["state"]
    rule_cost = float(turn_cost(torch.as_tensor(end[0:2]), torch.as_tensor(end[T_POS]), torch.as_tensor(GOALS[0])))
    assert plan.cost <= rule_cost + 1e-3


def test_a_guarded_planner_keeps_the_rules_turn_where_its_candidates_move_the_t_and_searches_elsewhere():
    assert spread(torch.tensor([[0.0, 0.0], [2.0, 0.0], [1.0, 1.0], [1.0, -1.0]])) == pytest.approx(1.0)
    state = np.zeros(STATE_DIM, np.float32)
    state[T_POS] = (256, 256)
    state[4:6] = (460, 60)  # cyan out of the way
    seen = {}
    for where, amber in (("behind the T", (340, 256)), ("far from it", (40, 470))):
        state[0:2] = amber
        for guard in (0.0, 1.0):
            planner = SimulatorPlanner(
                cfg=GaussianCEMConfig(samples=16, iterations=2, init_std=0.3), warm="chase_t", guard=guard
            )
            plan = planner.plan(state, 0)
            first = plan.history[0]
            moved = spread(planner.t_paths[0][:, -1])
            seen[where, guard] = (
                planner.guarded,
                torch.equal(plan.actions, first.actions[0]),
                plan.cost < float(first.costs[0]),
            )
    assert moved == 0.0  # far from the T, no candidate reaches it
    assert seen == {
        ("behind the T", 0.0): ([0, 1], False, True),  # the search beats the rule's turn...
        ("behind the T", 1.0): ([1, 1], True, False),  # ...but the guard keeps the rule's
        ("far from it", 0.0): ([0, 1], False, True),
        ("far from it", 1.0): ([0, 1], False, True),  # no candidate moves the T: the guard lets the search play
    }
    with pytest.raises(LemarioError, match="--warm"):
        SimulatorPlanner(guard=1.0)


def test_a_planner_with_a_front_searches_near_its_pushing_point_and_plays_the_rules_turn_farther_off():
    state = np.zeros(STATE_DIM, np.float32)
    state[T_POS] = (256, 256)
    state[4:6] = (460, 60)  # cyan out of the way
    seen = {}
    for where, amber in (("behind the T", (340, 256)), ("far from it", (40, 470))):  # 19 and ~430 from the front
        state[0:2] = amber
        for front in (0.0, 30.0):
            planner = SimulatorPlanner(
                cfg=GaussianCEMConfig(samples=16, iterations=2, init_std=0.3), warm="chase_t", front=front
            )
            plan = planner.plan(state, 0)
            rule = planner.rule_turn(state, 0, 5)
            seen[where, front] = (planner.guarded, len(plan.history), torch.allclose(plan.actions, rule, atol=1e-6))
    assert seen == {
        ("behind the T", 0.0): ([0, 1], 2, False),  # searched
        ("behind the T", 30.0): ([0, 1], 2, False),  # within the front: searched
        ("far from it", 0.0): ([0, 1], 2, False),
        ("far from it", 30.0): ([1, 1], 1, True),  # off the front: the rule's turn, scored alone
    }
    planner = SimulatorPlanner(warm="chase_t", front=30.0)
    plan = planner.plan(state, 0)
    assert plan.history[0].actions.shape == (1, 5, 2) and planner.ends.shape == (1, 3, 2)  # what a person is shown
    for bad in ({"front": 1.0}, {"front": -1.0, "warm": "chase_t"}):
        with pytest.raises(LemarioError, match="--front"):
            SimulatorPlanner(**bad)


def test_a_replanning_planner_plans_the_turns_rest_before_each_step_and_follows_the_board():
    state = np.zeros(STATE_DIM, np.float32)
    state[T_POS] = (256, 256)
    state[0:2], state[4:6] = (340, 256), (460, 60)  # amber behind the T, cyan out of the way
    ends, horizons = {}, {}
    for replan in (False, True):
        planner = SimulatorPlanner(cfg=GaussianCEMConfig(samples=48, iterations=3), seed=0, replan=replan)
        plan_turn, horizons[replan] = planner.plan_turn, []
        planner.plan_turn = lambda seen, h, rest, f=plan_turn, hs=horizons[replan]: hs.append(h) or f(seen, h, rest)
        env = PushGame()
        env.reset(options={"state": state})
        for step in range(5):  # one turn; after its first step the T is knocked 80 units off the plan's line
            _, _, _, _, info = env.step(planner(env.seen()))
            if step == 0:
                knocked = env.board.state()
                knocked[9] += 80
                env.board.set_state(knocked)
        end = info["state"]
        ends[replan] = float(
            turn_cost(torch.as_tensor(end[0:2]), torch.as_tensor(end[T_POS]), torch.as_tensor(GOALS[0]))
        )
        assert planner.last.history[0].actions.shape == (48, 5, 2) and len(planner.t_paths) == 3  # the turn's first
    assert horizons == {False: [5], True: [5, 4, 3, 2, 1]}
    assert ends[True] < ends[False] - 20, ends
