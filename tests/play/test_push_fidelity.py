"""Known answers of the push fidelity analysis's pieces (the whole command: tests/model/test_push_world_model.py)."""

import numpy as np
import pytest
import torch

from lemario.play.push_fidelity import aggregate, changes, judge, response, spearman, split, turn_starts


def test_spearman_known_answers():
    a = np.array([0.1, 0.5, 0.3, 0.9])
    assert spearman(a, a**3) == pytest.approx(1.0)  # any increasing map keeps the order
    assert spearman(a, -a) == pytest.approx(-1.0)
    assert spearman(np.array([1.0, 2, 3, 4]), np.array([2.0, 1, 4, 3])) == pytest.approx(0.6)  # 1 - 6*4/(4*15)


def test_judge_scores_a_pick_by_its_true_cost():
    true = np.array([10.0, 7.0, 12.0, 4.0])  # candidate 0 is the rule's turn
    fooled = judge(np.array([9.0, 8.0, 1.0, 6.0]), true)  # the scorer likes candidate 2, truly the worst
    assert fooled["regret"] == 8.0 and fooled["gain"] == -2.0 and fooled["believed"] == 8.0
    assert fooled["beats_rule"] == 0.0
    right = judge(true, true)
    assert right == {"rho": pytest.approx(1.0), "regret": 0.0, "gain": 6.0, "believed": 6.0, "beats_rule": 1.0}


def test_turn_starts_alternate_sides_at_each_turns_first_step():
    starts = turn_starts(12, 900_000)
    assert len(starts) == 12 and all(s.step_in_turn == 0 for s in starts)
    assert [s.me for s in starts[:4]] == [0, 1, 0, 1]
    assert np.array_equal(starts[10].state, turn_starts(11, 900_000)[10].state)  # the same matches each time


def test_changes_compare_each_candidates_move_from_the_rules():
    true = torch.zeros(3, 3, 2)  # candidates x (amber, cyan, T) x (x, y)
    true[:, 1, 0] = torch.tensor([0.0, 3.0, -3.0])  # cyan's disc ends 3 units right or left of the rule's candidate
    true[:, 2, 1] = torch.tensor([0.0, 1.0, 2.0])  # the T
    shifted = true + 50.0  # read 50 units off, the same for every candidate: the changes are right
    perfect = changes(shifted, true, me=1)
    assert perfect["disc_res"] == 0.0 and perfect["t_res"] == 0.0
    assert perfect["disc_tot"] == pytest.approx(18.0) and perfect["t_tot"] == pytest.approx(2.0)  # about the mean
    assert perfect["t_spread"] == pytest.approx((2.0 / 3) ** 0.5)  # the predicted T ends' rms spread: sqrt(t_tot / 3)
    still = changes(torch.zeros(3, 3, 2), true, me=1)  # foresees no change at all
    assert still["disc_res"] == pytest.approx(18.0) and still["t_res"] == pytest.approx(5.0)
    assert changes(torch.zeros(3, 3, 2), true, me=0)["disc_res"] == 0.0  # amber's disc does not move
    assert still["t_spread"] == 0.0
    rows = [{**judge(np.array([1.0, 2, 3]), np.array([1.0, 2, 3])), **c} for c in (perfect, still)]
    pooled = aggregate(rows)
    assert pooled["disc_r2"] == pytest.approx(1 - 18 / 36) and pooled["t_r2"] == pytest.approx(1 - 5 / 4)


def test_split_leaves_one_of_the_predictions_two_errors_in():
    true = torch.zeros(3, 3, 2)
    true[:, 2, 0] = torch.tensor([0.0, 2.0, 4.0])  # the T ends 0, 2 or 4 units right
    pred = true.clone()
    pred[:, 2, 0] = torch.tensor([10.0, 10.0, 11.0])  # read 10 units off, and foresees 0 / +1 where it moves 2 / 4
    parts = split(pred, true)
    assert torch.equal(parts["changes"][:, 2, 0], torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64))
    assert torch.equal(parts["start"][:, 2, 0], torch.tensor([10.0, 12.0, 14.0], dtype=torch.float64))
    both = split(true, true)  # a perfect prediction is left as it is either way
    assert torch.equal(both["changes"], true.double()) and torch.equal(both["start"], true.double())


def test_aggregate_splits_the_ranking_by_whether_the_candidates_move_the_t():
    true = np.array([1.0, 2, 3])
    rows = [
        {**judge(true, true), "contact": 1.0},  # rho +1 where the T moves
        {**judge(-true, true), "contact": 0.0},  # rho -1 where it does not
        {**judge(-true, true), "contact": 0.0},
    ]
    out = aggregate(rows)
    assert out["rho_contact"] == pytest.approx(1.0) and out["rho_free"] == pytest.approx(-1.0)
    assert out["contact"] == pytest.approx(1 / 3) and out["rho"] == pytest.approx(-1 / 3)


def test_response_recovers_how_far_each_steps_thrust_moves_the_disc():
    gen = torch.Generator().manual_seed(0)
    candidates = 0.3 * torch.randn(64, 3, 2, generator=gen)  # 64 candidates of 3 steps
    per_step = torch.tensor([20.0, 12.0, 4.0])  # units per unit of thrust, along the thrust's own axis
    disc = 100.0 + (candidates * per_step[None, :, None]).sum(1)  # (64, 2): the end position
    disc[:, 0] += 5.0 * candidates[:, 0, 1]  # the first step's y thrust also moves x: not counted in x's response
    assert response(candidates, disc) == pytest.approx([20.0, 12.0, 4.0], abs=1e-4)  # a tiny ridge
    still = response(candidates, torch.full((64, 2), 7.0))  # foresees no move
    assert still == pytest.approx([0.0, 0.0, 0.0], abs=1e-9)
    rows = [
        {**judge(np.array([1.0, 2]), np.array([1.0, 2])), "contact": 0.0, "response": [20.0, 12.0, 4.0]},
        {**judge(np.array([1.0, 2]), np.array([1.0, 2])), "contact": 0.0, "response": [10.0, 6.0, 2.0]},
        {**judge(np.array([1.0, 2]), np.array([1.0, 2])), "contact": 1.0, "response": [99.0, 99.0, 99.0]},
    ]
    assert aggregate(rows)["response"] == pytest.approx([15.0, 9.0, 3.0])  # the free positions' mean
    assert "response" not in aggregate(rows[2:])  # no free position: no response to report
