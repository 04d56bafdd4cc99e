"""Control: the CEM optimizer on known problems, the evaluation harness end to end, bad agent specs."""

import json

import numpy as np
import pytest
import torch

from conftest import run_cli
from lemario.actions import action_set
from lemario.errors import LemarioError
from lemario.evaluate import EVAL_SEED_BASE, EvalConfig, evaluate
from lemario.planner import PlannerConfig, cem, prior_probs


def test_cem_finds_a_hidden_sequence():
    target = torch.tensor([3, 1, 4, 1, 5, 9, 2, 6, 5, 3])  # one of 10 actions per step: 10^10 sequences

    def score(seqs):
        return -(seqs - target).abs().sum(-1).float()

    cfg = PlannerConfig(horizon=10, samples=256, elites=25, iterations=12, smoothing=0.1)
    best, value, probs = cem(score, torch.full((10, 10), 0.1), cfg, torch.Generator().manual_seed(0))
    assert torch.equal(best, target) and value == 0
    assert (probs.argmax(1) == target).all() and probs.max(1).values.min() > 0.8


def test_cem_drives_a_quadratic_cost_to_its_minimum():
    # actions are numbers 0..20, the cost (sum a_t - 7)^2 is minimal at a_t = 7
    def score(seqs):
        return -((seqs.float() - 7) ** 2).sum(-1)

    cfg = PlannerConfig(horizon=5, samples=200, elites=20, iterations=8)
    best, value, _ = cem(score, torch.full((5, 21), 1 / 21), cfg, torch.Generator().manual_seed(1))
    assert value > -1 and (best - 7).abs().max() <= 1


def test_cem_keeps_the_previous_plan_when_it_is_best():
    keep = torch.tensor([2, 2, 2])
    cfg = PlannerConfig(horizon=3, samples=16, elites=4, iterations=1)
    best, _, _ = cem(lambda s: (s == 2).all(-1).float(), torch.full((3, 12), 1 / 12), cfg, torch.Generator().manual_seed(0), keep)
    assert torch.equal(best, keep)


def test_biased_prior_favours_right():
    actions = action_set("complex")
    p = prior_probs(PlannerConfig(horizon=4), actions)
    assert p.shape == (4, 12) and torch.allclose(p.sum(1), torch.ones(4))
    right = [i for i, a in enumerate(actions) if "right" in a]
    assert p[0, right].sum() > 0.5


def test_harness_rows_and_determinism(tmp_path):
    cfg = EvalConfig(agents=("biased", "random"), episodes=3, workers=1, max_steps=200, out=tmp_path / "a")
    s = evaluate(cfg)
    rows = [json.loads(x) for x in (tmp_path / "a" / "episodes.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and {r["agent"] for r in rows} == {"biased", "random"}
    assert [r["eval_seed"] for r in rows[:3]] == [EVAL_SEED_BASE + i for i in range(3)]
    for r in rows:
        assert r["end"] in {"enemy", "pit", "time", "step_limit", "flag"} and r["max_x"] >= r["final_x"] >= 0
    agg = s["per_agent"]["biased"]
    assert agg["mean_max_x"] == pytest.approx(np.mean([r["max_x"] for r in rows if r["agent"] == "biased"]))
    assert s["kseed"]["seeds"] == 2
    again = evaluate(EvalConfig(agents=("biased", "random"), episodes=3, workers=2, max_steps=200, out=tmp_path / "b"))
    assert again["per_agent"] == s["per_agent"], "same eval seeds, same results, whatever the worker count"


def test_bad_agent_specs(tmp_path):
    with pytest.raises(LemarioError, match="unknown agent"):
        evaluate(EvalConfig(agents=("smart",), episodes=1, workers=1, out=tmp_path / "x"))
    with pytest.raises(LemarioError, match="needs a checkpoint"):
        evaluate(EvalConfig(agents=("planner",), episodes=1, workers=1, out=tmp_path / "x"))
    r = run_cli("eval", "planner:/nonexistent/model.safetensors", "--episodes", "1")
    assert r.returncode == 2 and "no checkpoint" in r.stderr and len(r.stderr.strip().splitlines()) == 1
