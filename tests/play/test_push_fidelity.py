"""Known answers of the push fidelity analysis's pieces (the whole command: tests/model/test_push_world_model.py)."""

import numpy as np
import pytest

from lemario.play.push_fidelity import judge, spearman, turn_starts


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
