"""The run folder's shared files: the run log (metrics.jsonl), the run-config key, tables a row a line and checkpoints,
with known answers."""

import json
from dataclasses import dataclass, field

import pytest
import torch

from lemario.core import checkpoint, runlog
from lemario.core.errors import LemarioError
from lemario.core.files import write_rows_json
from lemario.core.runconfig import check_same_run, differences, run_key, with_defaults


def test_run_log_leaves_out_a_cut_last_line_and_keeps_the_rows_asked_for(tmp_path):
    path = tmp_path / runlog.NAME
    assert runlog.read_rows(path) == []
    for step in (10, 20, 30):
        runlog.append_row(path, {"step": step, "loss": step / 10})
    with open(path, "a") as f:
        f.write('{"step": 40, "lo')  # a kill mid-write
    assert [r["step"] for r in runlog.read_rows(path)] == [10, 20, 30]
    runlog.keep_rows(path, lambda r: r["step"] <= 20)  # a resume from the checkpoint at step 20
    assert path.read_text() == '{"step": 10, "loss": 1.0}\n{"step": 20, "loss": 2.0}\n'
    runlog.append_row(path, {"step": 30, "loss": 3.5})
    assert [r["loss"] for r in runlog.read_rows(path)] == [1.0, 2.0, 3.5]


def test_a_rows_json_file_reads_back_whole_and_holds_a_row_a_line(tmp_path):
    obj = {
        "round": 3,
        "config": {"cell": "ram", "seed": 0},
        "rounds": [],
        "cells": [{"key": "x1-y2", "x": 40}, {"key": "x2-y2", "x": 70}],
    }
    write_rows_json(tmp_path / "t.json", obj)
    text = (tmp_path / "t.json").read_text()
    assert json.loads(text) == obj
    assert '\n    {"key": "x1-y2", "x": 40},\n    {"key": "x2-y2", "x": 70}\n' in text and '\n  "rounds": [],\n' in text


def test_a_kill_between_a_checkpoints_two_files_loads_the_tensors_own_sidecar(tmp_path, monkeypatch):
    """The tensors are renamed into place before the sidecar: a kill between the two left session 39's resumed
    training at the old step with the new weights."""
    path, side = tmp_path / "ckpt_latest.safetensors", tmp_path / "ckpt_latest.json"
    checkpoint.save(path, {"w": torch.zeros(2)}, {"kind": "world_model_training", "step": 5})

    def killed(*args):
        raise KeyboardInterrupt  # the kill, after the tensors' rename

    monkeypatch.setattr(checkpoint, "write_json", killed)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save(path, {"w": torch.ones(2)}, {"kind": "world_model_training", "step": 10})
    monkeypatch.undo()
    assert json.loads(side.read_text())["step"] == 5  # the previous write's sidecar
    tensors, meta = checkpoint.load(path, kind="world_model_training")
    assert meta["step"] == 10 and torch.equal(tensors["w"], torch.ones(2))
    side.unlink()  # killed before a first sidecar was written
    assert checkpoint.load_meta(path)["step"] == 10
    checkpoint.save(path, {"w": torch.ones(2)}, {"kind": "world_model_training", "step": 10})
    edited = {**json.loads(side.read_text()), "world_model": "elsewhere"}  # as a fork rewrites a policy's
    side.write_text(json.dumps(edited))
    assert checkpoint.load_meta(path)["world_model"] == "elsewhere"


@dataclass(frozen=True)
class Inner:
    level: str = "1-1"
    max_steps: int = 1500
    noop_max: int = 0


@dataclass(frozen=True)
class Outer:
    out: str = "runs/x"
    lr: float = 3e-4
    env: Inner = field(default_factory=Inner)


def test_run_key_drops_bookkeeping_and_differences_name_both_values():
    key = run_key(Outer(lr=0.1, env=Inner(max_steps=60)), ("out",))
    assert key == {"lr": 0.1, "env": {"level": "1-1", "max_steps": 60, "noop_max": 0}}
    stored = run_key(Outer(), ("out",))
    assert differences(stored, key) == ["env.max_steps: 1500 -> 60", "lr: 0.0003 -> 0.1"]


def test_an_older_key_resumes_with_new_options_at_their_defaults_and_moved_fields_in_place():
    defaults = run_key(Outer(), ("out",))
    older = {"lr": 0.0003, "level": "1-1", "max_steps": 1500}  # before `env` was nested and noop_max existed
    assert with_defaults(older, defaults) == defaults
    check_same_run(older, defaults, defaults, "runs/x", "test run")  # the same run: no error
    with pytest.raises(
        LemarioError, match=r"runs/x holds a test run with another config \(env.max_steps: 60 -> 1500\)"
    ):
        check_same_run({**older, "max_steps": 60}, defaults, defaults, "runs/x", "test run")


def test_a_refusal_is_one_line_that_names_at_most_four_fields():
    defaults = {f"f{i}": i for i in range(6)}
    with pytest.raises(LemarioError) as e:
        check_same_run({f"f{i}": -i for i in range(1, 6)} | {"f0": 0}, defaults, defaults, "d", "run")
    message = str(e.value)
    assert "\n" not in message and "f1: -1 -> 1; f2: -2 -> 2; f3: -3 -> 3; f4: -4 -> 4; and 1 more" in message
    json.dumps(message)


def test_a_process_records_the_commit_it_started_with(tmp_path, monkeypatch):
    """The checkout may move on while a long run works: the commit is read once per process and kept."""
    import subprocess

    from lemario.core import provenance

    provenance.git_commit.cache_clear()
    calls = []
    real = subprocess.run

    def counting(*args, **kwargs):
        calls.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(provenance.subprocess, "run", counting)
    first = provenance.provenance()["git_commit"]
    assert provenance.provenance()["git_commit"] == first and len(calls) == 2, "read once (rev-parse, status)"
    provenance.git_commit.cache_clear()
