"""scripts/compare_arms.py: arms of policies side by side, paired by policy and eval seed, draws pooled."""

import importlib.util
import json
from pathlib import Path

import pytest

spec = importlib.util.spec_from_file_location("compare_arms", Path(__file__).parents[2] / "scripts" / "compare_arms.py")
compare_arms = importlib.util.module_from_spec(spec)
spec.loader.exec_module(compare_arms)


def write_arm(folder: Path, policies: dict[str, list[tuple[int, int]]]) -> Path:
    """One `lemario eval` folder per policy: episodes (max_x, flag) on eval seeds 0, 1, ..."""
    for name, episodes in policies.items():
        (folder / name).mkdir(parents=True)
        rows = [
            {"eval_seed": i, "max_x": x, "final_x": x, "flag_get": f, "end": "flag" if f else "pit"}
            for i, (x, f) in enumerate(episodes)
        ]
        (folder / name / "episodes.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def test_paired_differences_and_pooled_draws_by_hand(tmp_path):
    ref = write_arm(tmp_path / "ref", {"s1": [(100, 0), (200, 0), (300, 1), (400, 0)], "s2": [(100, 0)] * 4})
    arm = write_arm(tmp_path / "arm", {"s1": [(150, 0), (200, 1), (350, 1), (400, 0)], "s3": [(900, 1)] * 4})
    table = compare_arms.compare({"ref": ref, "arm": arm}, {"both": ["ref", "arm"]})
    assert table["reference"] == "ref" and table["arms"]["ref"]["means"] == [250, 100]
    row = table["arms"]["arm"]
    assert row["flag_rates"] == [0.5, 1.0] and (row["flags"], row["episodes"]) == (6, 8) and row["mean"] == 587.5
    p = row["paired"]  # only s1 has a partner (s3 has none in the reference): +50, 0, +50, 0 px; 0, +100, 0, 0 pts
    assert p["pairs"] == 4 and p["max_x"] == 25 and p["flag_points"] == 25
    assert p["max_x_ci"][0] <= 25 <= p["max_x_ci"][1]
    pooled = table["draws"]["both"]  # the mean of each draw's policy mean: (175 + 587.5) / 2, flags (0.125 + 0.75) / 2
    assert pooled["max_x"]["mean"] == 381.25 and pooled["flag_rate"]["mean"] == pytest.approx(0.4375)
    assert pooled["draws"] == 2 and pooled["policies"] == 4 and pooled["max_x"]["per_draw"] == [175, 587.5]
    assert pooled["flag_rate"]["ci95"][0] < 0.4375 < pooled["flag_rate"]["ci95"][1]


def test_a_one_policy_reference_pairs_every_policy_by_eval_seed(tmp_path):
    ref = write_arm(tmp_path / "ref", {"s9": [(100, 0), (200, 0)]})
    arm = write_arm(tmp_path / "arm", {"s1": [(100, 1), (200, 1)], "s2": [(300, 0), (400, 0)]})
    p = compare_arms.compare({"ref": ref, "arm": arm})["arms"]["arm"]["paired"]
    assert p["pairs"] == 4 and p["max_x"] == 100 and p["flag_points"] == 50


def test_an_evaluation_of_several_policies_is_an_arm_split_by_policy(tmp_path):
    """A flywheel iteration's ITER/eval/LEVEL holds every policy's episodes in one file: each is named by its
    policy's folder, so two runs' iterations pair by policy seed and eval seed."""
    for run, xs in (("a", (100, 300)), ("b", (200, 500))):
        folder = tmp_path / run / "iter001" / "eval" / "5-1"
        folder.mkdir(parents=True)
        rows = [
            {"agent": f"policy:{run}/iter001/policies/s100{k}/policy.safetensors", "eval_seed": i, "max_x": x + i}
            | {"final_x": x + i, "flag_get": 0, "end": "enemy"}
            for k, x in enumerate(xs, start=1)
            for i in range(3)
        ]
        (folder / "episodes.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    table = compare_arms.compare({"a": tmp_path / "a/iter001/eval/5-1", "b": tmp_path / "b/iter001/eval/5-1"})
    assert table["arms"]["a"]["policies"] == ["s1001", "s1002"] and table["arms"]["a"]["means"] == [101, 301]
    p = table["arms"]["b"]["paired"]  # s1001: +100 on each seed, s1002: +200
    assert p["pairs"] == 6 and p["max_x"] == 150 and p["flag_points"] == 0
    both = tmp_path / "both"  # two runs' s1001 in one evaluation: the folder names collide, the specs name them
    both.mkdir()
    text = "".join((tmp_path / r / "iter001/eval/5-1/episodes.jsonl").read_text() for r in "ab")
    (both / "episodes.jsonl").write_text(text)
    assert len(compare_arms.compare({"both": both})["arms"]["both"]["policies"]) == 4


def test_every_level_of_an_evaluation_on_several_levels_counts(tmp_path):
    """`lemario eval --levels` plays each level on the same eval seeds and pools them in one episodes.jsonl."""
    for run, x in (("a", 100), ("b", 200)):
        (tmp_path / run / "s1").mkdir(parents=True)
        rows = [
            {"level": lv, "eval_seed": i, "max_x": x + 10 * j, "final_x": 0, "flag_get": 0, "end": "pit"}
            for j, lv in enumerate(("5-1", "4-2"))
            for i in range(2)
        ]
        (tmp_path / run / "s1" / "episodes.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    table = compare_arms.compare({"a": tmp_path / "a", "b": tmp_path / "b"})
    assert table["arms"]["a"]["episodes"] == 4 and table["arms"]["a"]["means"] == [105]
    assert table["arms"]["b"]["paired"]["pairs"] == 4


def test_bad_arms_are_one_line_errors(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit:
        compare_arms.compare({"ref": tmp_path})
    assert exit.value.code == 2 and "holds no episodes.jsonl nor */episodes.jsonl" in capsys.readouterr().err
    arm = write_arm(tmp_path / "arm", {"s1": [(100, 0)]})
    with pytest.raises(SystemExit) as exit:
        compare_arms.compare({"arm": arm}, {"pool": ["arm", "typo"]})
    assert exit.value.code == 2 and "names arm 'typo'" in capsys.readouterr().err


def test_two_recipes_differ_over_the_same_world_models_drawn_together(tmp_path):
    arms = {
        "a1": write_arm(tmp_path / "a1", {"s1": [(100, 1), (100, 1)]}),
        "b1": write_arm(tmp_path / "b1", {"s2": [(50, 0), (50, 0)]}),
        "a2": write_arm(tmp_path / "a2", {"s1": [(900, 0), (900, 0)]}),
        "b2": write_arm(tmp_path / "b2", {"s2": [(850, 0), (850, 0)]}),
    }
    draws = {"a": ["a1", "a2"], "b": ["b1", "b2"]}
    d = compare_arms.compare(arms, draws, [("a", "b")])["diffs"]["a - b"]
    assert d["max_x"] == 50 and d["max_x_ci"] == (50.0, 50.0)  # the 800-px spread between world models cancels
    assert d["flag_points_by_draw"] == [100.0, 0.0] and d["flag_points"] == 50 and d["flag_points_ci"] == (0.0, 100.0)
    with pytest.raises(SystemExit) as exit:
        compare_arms.compare(arms, {**draws, "c": ["a1"]}, [("a", "c")])
    assert exit.value.code == 2
