"""The flywheel's plan of an iteration: flips replayed from the history, and the saved files' round trips."""

import json
from dataclasses import replace
from pathlib import Path

import pytest

from lemario.core.errors import LemarioError
from lemario.core.runconfig import check_same_run, run_key
from lemario.flywheel.config import BOOKKEEPING, PRESETS, FlywheelConfig
from lemario.flywheel.detector import Decision, DetectorConfig
from lemario.flywheel.keys import upgrade_key
from lemario.flywheel.plan import Past, Plan, Settings, plan_iteration
from lemario.flywheel.summary import IterationSummary
from lemario.games.mario.env import EnvConfig
from lemario.model.world_model import ModelConfig

CFG = replace(PRESETS["tiny"], out=Path("/nonexistent/run"))  # an empty hall of fame


def test_each_flip_changes_one_variable():
    s = Settings(explore=0.1, warm_start=True)
    assert s.flipped("exploration") == replace(s, explore=0.2)
    assert Settings(explore=0.0, warm_start=True).flipped("exploration").explore == 0.1
    assert Settings(explore=0.8, warm_start=True).flipped("exploration").explore == 1.0
    assert s.flipped("entropy").entropy_scale == 3.0
    assert s.flipped("warm_start").warm_start is False
    assert s.flipped("replay_caps").replay_caps is False
    with pytest.raises(ValueError, match="unknown flip"):
        s.flipped("learning_rate")


def test_a_branch_flips_the_next_iteration_and_a_commit_keeps_it():
    first = plan_iteration(CFG, 1, [])
    assert first.flip is None and first.settings == Settings(explore=CFG.explore, warm_start=CFG.warm_start)
    assert first.collect_policy == "biased" and first.collect_episodes == CFG.bootstrap_episodes
    assert first.policy_seeds == (1001, 1002) and first.train_seed == 1
    # iteration 2 branched with "entropy": iteration 3 runs with it
    third = plan_iteration(CFG, 3, [Past("commit"), Past("branch", flip="entropy")])
    assert third.flip == "entropy" and third.settings.entropy_scale == 3.0 and third.base.entropy_scale == 1.0
    # iteration 3 committed with its flip: it is kept in the base of iteration 4, which flips nothing
    fourth = plan_iteration(CFG, 4, [Past("commit"), Past("branch", flip="entropy"), Past("commit", None, "entropy")])
    assert fourth.flip is None and fourth.base.entropy_scale == 3.0 and fourth.settings == fourth.base
    # a flip that did not commit is reverted: the next branch flips the next variable from the old base
    fifth = plan_iteration(CFG, 4, [Past("commit"), Past("branch", "entropy"), Past("branch", "warm_start", "entropy")])
    assert fifth.flip == "warm_start" and fifth.settings.entropy_scale == 1.0 and fifth.settings.warm_start is False


def test_later_iterations_collect_a_share_on_policy(tmp_path):
    """The bootstrap has no policy to play alone; a plan saved before --on-policy explored every episode."""
    assert plan_iteration(CFG, 1, []).collect_on_policy == 0.0
    hof = tmp_path / "hof" / "iter1_meanx700_maxx900"
    hof.mkdir(parents=True)
    (tmp_path / "hof" / "catalog.json").write_text(
        json.dumps([{"name": hof.name, "iteration": 1, "mean_max_x": 700.0, "max_max_x": 900.0, "score": 700.0}])
    )
    second = plan_iteration(replace(CFG, out=tmp_path, on_policy=0.25, on_policy_by="best"), 2, [Past("commit")])
    assert second.collect_policy.startswith("policy:") and second.collect_on_policy == 0.25
    old = {k: v for k, v in second.to_json().items() if k != "collect_on_policy"}
    assert Plan.from_json(old).collect_on_policy == 0.0
    assert second.collect_on_policy_agents == () and second.collection(CFG).on_policy_agents == ()
    last = replace(CFG, out=tmp_path, on_policy_by="last", world_models=2, k=2)
    third = plan_iteration(last, 3, [Past("commit"), Past("branch")])
    assert third.collect_on_policy_agents == tuple(
        f"policy:{tmp_path}/iter002/policies/{name}/policy.safetensors"
        for name in ("s2001", "s2002", "w1-s2001", "w1-s2002")
    ), "iteration 2's policies, every world model's, whatever the hall of fame holds"
    assert third.collection(last).on_policy_agents == third.collect_on_policy_agents
    assert Plan.from_json(json.loads(json.dumps(third.to_json()))) == third
    assert plan_iteration(last, 1, []).collect_on_policy_agents == (), "the bootstrap has no policies"
    ends = replace(CFG, out=tmp_path, explore_at_ends=3)
    assert second.collection(ends).explore_at_ends == 3, "explored where the on-policy episodes end"
    empty = replace(ends, out=CFG.out)  # an empty hall of fame
    assert plan_iteration(empty, 1, []).collection(empty).explore_at_ends == 0, "the bootstrap explores nothing"
    with pytest.raises(LemarioError, match="--explore-at-ends explores where"):
        replace(ends, on_policy=0.0).validate()
    with pytest.raises(LemarioError, match="--on-policy-by 'worst'"):
        replace(CFG, on_policy_by="worst").validate()


def test_plan_and_decision_round_trip_through_their_json():
    plan = plan_iteration(CFG, 3, [Past("commit"), Past("branch", flip="exploration")])
    text = json.dumps(plan.to_json())
    assert Plan.from_json(json.loads(text)) == plan
    decision = Decision("branch", "z 0.3 <= 1.0", 0.3, 1.0, 40.0, 1, 700.0, 712.0, 35.0, 3, "entropy")
    d = decision.to_json()
    assert d["decision"] == "branch" and "verdict" not in d
    assert Decision.from_json({**d, "iteration": 2, "applied_flip": None, "seed_means": {}}) == decision


def test_a_run_key_of_the_flat_layout_resumes():
    """Keys written before the layout issue: the env's fields at the top level, imagination's reward weights flat
    and in units of 8 px (death penalty 5 = 40 px), 84-px whole pooled frames and a model without the previous action;
    the same run today."""
    cpu = FlywheelConfig()
    then_train = replace(cpu.train, model=ModelConfig(), clock="wall")  # a wall-clock cap then
    then = replace(cpu, env=EnvConfig(), train=then_train, on_policy=0.0)  # `cpu` then
    key, defaults = run_key(then, BOOKKEEPING), run_key(cpu, BOOKKEEPING)
    old = {k: v for k, v in key.items() if k != "env"} | {
        k: key["env"][k] for k in ("level", "backend", "action_set", "max_steps")
    }
    old["imagine"] = {k: v for k, v in key["imagine"].items() if k != "reward"} | {
        "death_penalty": 5.0,
        "score_weight": 0.0,
    }
    before_crop = ("prev_action", "crop_top", "pool")  # nor a HUD crop or a pooling switch: whole, pooled frames
    old["train"] = {k: v for k, v in old["train"].items() if k != "clock"} | {
        "model": {k: v for k, v in key["train"]["model"].items() if k not in before_crop}
    }
    check_same_run(upgrade_key(old), key, defaults, Path("run"), "flywheel run")
    with pytest.raises(Exception, match=r"train.clock: wall -> cpu"):  # resumed on today's clock: another run
        check_same_run(upgrade_key(old), run_key(replace(then, train=replace(then_train, clock="cpu")), BOOKKEEPING),
                       defaults, Path("run"), "x")  # fmt: skip
    with pytest.raises(Exception, match=r"imagine.reward.death_penalty: 16.0 -> 40.0"):
        check_same_run(
            upgrade_key(old | {"imagine": old["imagine"] | {"death_penalty": 2.0}}), key, defaults, Path("run"), "x"
        )


def test_files_written_before_the_layout_load():
    """summary.json and config.json of a tiny flywheel run written by lemario at aa8ec90 (before this layout)."""
    legacy = Path(__file__).parents[1] / "fixtures" / "legacy"
    stored = json.loads((legacy / "flywheel_summary.json").read_text())
    summary = IterationSummary.from_json(stored)
    assert summary.decision.verdict == "branch" and summary.plan.policy_seeds == (2001, 2002)
    again = json.loads(json.dumps(summary.to_json()))
    added = {  # fields of issue 19 (several world models per iteration, the components detector), at their defaults
        "best_world_model": 0,
        "exploration": None,  # issue 20: the frontier exploration's figures, none in a run without it
        "level_scores": None,  # issue 21: each level's scores, none in a single-level run
        "model_error": None,  # session 34: the warm-start model's progress error, none before it was measured
        "plan": {"world_models": 1, "collect_on_policy": 0.0, "collect_on_policy_agents": [], "policy_init": None},
        # session 32: every collected episode explored; session 35: the collecting policy alone played the on-policy
        # ones; session 46: every policy started fresh
        "decision": {"rule": "seeds", "se": None, "best_se": None, "world_model_var": None, "world_models": 1}
        | {"world_model_var_high": None, "z_high": None}  # session 22: z at the world-model component's top
        | {"metric": "max_x", "flags": None, "t": None, "df": None},  # session 53: the flag test, Welch's df
    }
    for field, value in added.items():
        if isinstance(value, dict):
            assert {k: again[field].pop(k) for k in value} == value
        else:
            assert again.pop(field) == value
    assert again == stored
    key = json.loads((legacy / "flywheel_config.json").read_text())["run_key"]
    tiny = PRESETS["tiny"]
    no_flag = replace(tiny.train, model=replace(tiny.train.model, flag_head=False))  # world models before spec v3
    no_flag = replace(no_flag, val_every=10, recal_batches=16)  # the tiny schedule then
    before = {"explore_steps": 0, "explorer": FlywheelConfig().explorer}  # issue 20's exploration: none then
    before["on_policy"] = 0.0  # session 32's on-policy episodes: none then
    before["on_policy_by"] = "best"  # session 35's choice of who plays them: the best then
    detector = DetectorConfig(rule="seeds", metric="max_x", threshold=1.0)  # flat fields then, max_x alone
    then = replace(tiny, detector=detector, train=no_flag, **before)  # as it ran then
    defaults = run_key(FlywheelConfig(), BOOKKEEPING)
    check_same_run(upgrade_key(key), run_key(then, BOOKKEEPING), defaults, Path("run"), "flywheel run")
    with pytest.raises(Exception, match="detector.rule: seeds -> components"):
        check_same_run(
            upgrade_key(key), run_key(replace(then, detector=replace(detector, rule="components")), BOOKKEEPING),
            defaults, Path("r"), "x",
        )  # fmt: skip
    with pytest.raises(Exception, match="detector.metric: max_x -> either"):  # an old run resumes on max_x alone
        either = replace(then, detector=replace(detector, metric="either"))
        check_same_run(upgrade_key(key), run_key(either, BOOKKEEPING), defaults, Path("r"), "x")
    with pytest.raises(Exception, match="train.model.flag_head: False -> True"):
        check_same_run(
            upgrade_key(key), run_key(replace(then, train=tiny.train), BOOKKEEPING), defaults, Path("r"), "x"
        )


def test_every_preset_validates():
    for cfg in PRESETS.values():
        cfg.validate()


def test_the_exploration_each_iteration_extends():
    """Iteration n explores to n x --explore-steps; 'collector' explores with the iteration's collecting policy;
    with --levels each level explores into a folder of its own, seeded apart."""
    tiny, explore = PRESETS["tiny"], PRESETS["cpu-explore"]
    [one] = tiny.explore_configs(3, "policy:P")
    assert one.env_steps == 3 * tiny.explore_steps == 120
    assert one.policy == "policy:P", "the tiny preset's explorer is 'collector'"
    [other] = explore.explore_configs(2, "policy:P")
    assert other.policy == "biased" and other.cell == "ram" and other.out == explore.out / "corpus" / "explore"
    a, b = replace(explore, levels=("1-1", "4-1")).explore_configs(1, "biased")
    assert (a.out.name, a.env.level, b.out.name, b.env.level) == ("explore-1-1", "1-1", "explore-4-1", "4-1")
    assert a.seed != b.seed and a.env_steps == b.env_steps == explore.explore_steps
