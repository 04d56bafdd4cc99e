"""scripts/action_coverage.py: per sub-corpus, how often each direction was pressed and what it moved."""

import importlib.util
from pathlib import Path

import h5py
import numpy as np
import pytest

spec = importlib.util.spec_from_file_location(
    "action_coverage", Path(__file__).parents[2] / "scripts" / "action_coverage.py"
)
action_coverage = importlib.util.module_from_spec(spec)
spec.loader.exec_module(action_coverage)


def write_episode(path: Path, actions: list[int], x: list[int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    labels = np.zeros((len(x), 16), dtype=np.int32)
    labels[:, 0] = x
    with h5py.File(path, "w") as h:
        h["actions"] = np.array(actions, dtype=np.uint8)
        h["labels"] = labels


def test_shares_and_moves_per_level_are_counted(tmp_path):
    # complex set: 0 NOOP, 1 right, 6 left
    write_episode(tmp_path / "1-1" / "a.h5", [1, 1, 6, 0], [40, 45, 52, 50, 50])
    write_episode(tmp_path / "1-2" / "a.h5", [6, 6], [40, 37, 32])
    c = action_coverage.coverage(tmp_path)
    assert c["1-1"]["right"] == (0.5, 6.0) and c["1-1"]["left"] == (0.25, -2.0) and c["1-1"]["neither"] == (0.25, 0.0)
    assert c["1-2"]["left"] == (1.0, -4.0) and c["1-2"]["right"][0] == 0.0
    assert c["1-1"]["never"] == ["right+A", "right+B", "right+A+B", "A", "left+A", "left+B", "left+A+B", "down", "up"]
    assert c["1-2"]["never"][:2] == ["NOOP", "right"]


def test_a_folder_without_episodes_is_a_one_line_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit:
        action_coverage.coverage(tmp_path)
    assert exit.value.code == 2 and "holds no episodes" in capsys.readouterr().err


def test_counts_are_recorded_into_the_sidecar_of_the_model_trained_on_the_corpus(tmp_path, capsys):
    from lemario.core import checkpoint
    from lemario.model.world_model import known_actions

    write_episode(tmp_path / "c" / "1-1" / "a.h5", [1, 1, 6, 0], [40, 45, 52, 50, 50])
    write_episode(tmp_path / "c" / "1-2" / "a.h5", [6, 6], [40, 37, 32])
    meta = {"kind": "world_model", "config": {"n_actions": 12}, "corpus": str(tmp_path / "c"), "train_config": {}}
    model = tmp_path / "wm" / "model.safetensors"
    checkpoint.save(model, {}, meta)
    assert action_coverage.record(model, tmp_path / "c") == [1, 2, 0, 0, 0, 0, 3] + [0] * 5
    assert known_actions(checkpoint.load_meta(model), 0.001).nonzero()[:, 0].tolist() == [0, 1, 6]
    assert action_coverage.record(model, tmp_path / "c")[6] == 3  # again: the same counts, no error
    for other, message in (
        ({"corpus": str(tmp_path / "elsewhere")}, "was trained on"),
        ({"train_config": {"episodes": "sel.json"}}, "a selection"),
        ({"action_counts": [1] * 12}, "already records other action counts"),
    ):
        checkpoint.save(model, {}, {**meta, **other})
        with pytest.raises(SystemExit) as exit:
            action_coverage.record(model, tmp_path / "c")
        assert exit.value.code == 2 and message in capsys.readouterr().err
