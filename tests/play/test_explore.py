"""Frontier exploration on the real emulator: the archive's pieces (cells, choice weights, cheaper ways, saved
states that restore exactly), and `lemario explore` end to end: env-step accounting, episodes that say where they
started, the same archive after kills and resumes as without."""

import io
import json
import math
import os
import signal
import subprocess
import sys
import time
import zlib
from dataclasses import asdict, replace

import numpy as np
import pytest

from lemario.data.corpus import read_episode, scan
from lemario.games.mario.env import EnvConfig, SuperMarioBros
from lemario.play.archive import Archive, Choosing, cell_key, state_bytes, state_from_bytes

from conftest import run_cli

TINY = ("explore", "--preset", "tiny")


def test_cells_of_frames_and_of_the_ram():
    frame = np.zeros((84, 84), np.uint8)
    frame[40:50, 10:20] = 200
    near = frame.copy()
    near[40, 10] = 190  # a pixel's change does not move the coarse picture
    far = np.roll(frame, 30, axis=1)  # the scene scrolled
    info = {"x_pos": 100, "y_pos": 79}
    assert cell_key("frame", frame, info) == cell_key("frame", near, info) != cell_key("frame", far, info)
    assert len(bytes.fromhex(cell_key("frame", frame, info))) == 11 * 8
    assert cell_key("ram", frame, info) == "x3-y4" == cell_key("ram", far, {"x_pos": 127, "y_pos": 64})


def test_choice_weights_and_cheaper_ways(tmp_path):
    a = Archive(tmp_path)
    a.round = 10
    a.add("a", 5, 100, 79, None, flag=False)  # terminal: never chosen
    a.cells["a"].terminal = True
    a.round = 1
    env = SuperMarioBros(EnvConfig())
    env.reset(seed=0)
    state = state_bytes(env.save_state())
    env.close()
    a.add("b", 30, 400, 79, state, flag=False)  # found in round 1
    a.round = 10
    a.add("c", 12, 200, 79, state, flag=False)  # found in round 10: recent
    a.cells["c"].chosen, a.cells["c"].seen = 3, 8
    keys, p = a.weights(Choosing(far=1.0, recent=0.5, recent_rounds=5))
    w_b = 1 + 1 + 400 / 400 + 0.0
    w_c = 1 / math.sqrt(4) + 1 / math.sqrt(9) + 200 / 400 + 0.5
    assert keys == ["b", "c"] and p == pytest.approx(np.array([w_b, w_c]) / (w_b + w_c))
    a.add("b", 40, 400, 79, state, flag=False)  # a dearer way is ignored
    assert a.cells["b"].steps == 30
    a.add("b", 20, 401, 80, state, flag=False)  # a cheaper one replaces it, keeping the counts and the discovery
    assert (a.cells["b"].steps, a.cells["b"].x, a.cells["b"].found_round) == (20, 401, 1)
    a.add("a", 50, 100, 79, state, flag=False)  # a dearer way that lives beats a cheaper one that dies
    assert not a.cells["a"].terminal and a.cells["a"].steps == 50
    a.add("a", 40, 100, 79, None, flag=False)  # ...and a cheaper death does not undo it
    assert not a.cells["a"].terminal and a.cells["a"].steps == 50
    del a.cells["a"]
    a.save()
    assert [p.name for p in (tmp_path / "states").glob("*.npz")] == ["round-000010.npz"]  # b's first way replaced
    again = Archive.load(tmp_path)
    assert again.cells == a.cells and again.round == 10 and again.state("b") == state
    chosen = again.choose(1000, Choosing(), np.random.default_rng(0))
    assert set(chosen) == {"b", "c"} and again.cells["b"].chosen + again.cells["c"].chosen == 3, "not yet counted"
    again.count_chosen([*chosen, None])  # when the round is merged (None: an exploration from spawn)
    assert again.cells["b"].chosen + again.cells["c"].chosen == 1003
    again.round = 11
    again.add("b", 1, 401, 80, state, flag=False)
    again.add("c", 2, 200, 79, state, flag=False)  # every state of rounds 1 and 10 replaced: their files go
    again.save()
    assert [p.name for p in (tmp_path / "states").glob("*.npz")] == ["round-000011.npz"]
    again.add("b", 0, 401, 80, state, flag=False, novelty=0.2)  # a world model's disagreement on the way here
    again.add("c", 1, 200, 79, state, flag=False, novelty=0.8)
    keys, p = again.weights(Choosing(far=0.0, recent=0.0, novelty=2.0))
    b, c = again.cells["b"], again.cells["c"]
    w_b = 1 / math.sqrt(1 + b.chosen) + 1 / math.sqrt(1 + b.seen) + 2.0 * 0.2 / 0.8
    w_c = 1 / math.sqrt(1 + c.chosen) + 1 / math.sqrt(1 + c.seen) + 2.0
    assert p == pytest.approx(np.array([w_b, w_c]) / (w_b + w_c))
    again.add("d", 1, 300, 79, state, flag=False, novelty=0.3)  # ranks: b 0.2 -> 0, d 0.3 -> 1/2, c 0.8 -> 1
    keys, p = again.weights(Choosing(far=0.0, recent=0.0, novelty=2.0, novelty_scale="rank"))
    counts = [1 / math.sqrt(1 + again.cells[k].chosen) + 1 / math.sqrt(1 + again.cells[k].seen) for k in keys]
    w = np.array(counts) + 2.0 * np.array([0.0, 1.0, 0.5])
    assert keys == ["b", "c", "d"] and p == pytest.approx(w / w.sum())
    for cell in again.cells.values():
        cell.novelty = 0.0  # no world model: every rank ties at 0, the counts alone choose
    _, p = again.weights(Choosing(far=0.0, recent=0.0, novelty=2.0, novelty_scale="rank"))
    assert p == pytest.approx(np.array(counts) / sum(counts))


def test_the_first_flag_is_counted_when_its_cell_keeps_a_cheaper_living_way(tmp_path):
    """Session 39: the flag's cell often already holds a living way (Mario beside the pole), so the way that touches
    the flag is not kept; the run's first flag and the cell's star must not depend on that."""
    a = Archive(tmp_path)
    state = b"a state"

    def result(steps, found, flag_cell=None, restored=True, replayed=0):  # as `explore._explore` returns one
        return {
            "steps": steps,
            "restored": restored,
            "replayed_frames": replayed,
            "found": found,
            "flag_cell": flag_cell,
            "seen": {key: 1 for key in found} | ({flag_cell: 1} if flag_cell else {}),
        }

    a.merge(result(120, {"x98-y5": (False, 300, 3150, 90, state, False, 0.0)}, restored=False), frame_skip=4)
    a.merge(result(40, {}, flag_cell="x98-y5", replayed=7), frame_skip=4)  # touches the flag; its dearer way not found
    a.merge(result(60, {}, flag_cell="x98-y5"), frame_skip=4)
    assert (a.env_steps, a.restores, a.emulator_frames, a.flag_env_steps) == (220, 2, 887, 160)
    assert a.cells["x98-y5"].flag and not a.cells["x98-y5"].terminal and a.cells["x98-y5"].seen == 3
    a.merge(result(10, {"x98-y5": (False, 250, 3149, 90, state, False, 0.0)}), frame_skip=4)  # a cheaper way
    assert a.cells["x98-y5"].steps == 250 and a.cells["x98-y5"].flag  # keeps the star


def test_a_world_models_ensemble_scores_the_cells(tmp_path):
    """--world-model: each cell found carries the ensemble's disagreement on the step that reached it."""
    import torch

    from lemario.core import checkpoint
    from lemario.model.train import PRESETS as TRAIN_PRESETS
    from lemario.model.world_model import WorldModel
    from lemario.play.explore import PRESETS, explore, step_novelty

    torch.manual_seed(0)
    for name, ensemble in (("plain", 0), ("ensemble", 3)):
        model = WorldModel(replace(TRAIN_PRESETS["tiny"].model, ensemble=ensemble)).eval()
        checkpoint.save(
            tmp_path / f"{name}.safetensors", model.state_dict(), {"kind": "world_model", "config": asdict(model.cfg)}
        )
    cfg = replace(PRESETS["tiny"], out=tmp_path / "run", env_steps=40, world_model=tmp_path / "ensemble.safetensors")
    archive = explore(cfg)
    scored = [c for c in archive.cells.values() if c.novelty > 0]
    assert len(scored) == len(archive.cells) > 0
    # the cell exploration 0 of round 1 reached at its first step, recomputed from that episode
    ep = read_episode(tmp_path / "run" / "explore-000001-000.h5")
    model = WorldModel(replace(TRAIN_PRESETS["tiny"].model, ensemble=3))
    model.load_state_dict(checkpoint.load(tmp_path / "ensemble.safetensors")[0])
    cell = archive.cells[cell_key("frame", ep.frames[1], {})]
    assert cell.steps == 1 and cell.novelty == pytest.approx(step_novelty(model.eval(), ep, [1])[0], rel=1e-5)
    r = run_cli(*TINY, "--world-model", str(tmp_path / "plain.safetensors"), "--out", str(tmp_path / "x"))
    assert r.returncode == 2 and "has no disagreement ensemble: train one with --model.ensemble" in r.stderr


def test_a_saved_state_restores_exactly(tmp_path):
    env = SuperMarioBros(EnvConfig())
    env.reset(seed=1)
    for a in [3] * 20 + [4] * 6:
        env.step(a)
    saved = state_bytes(env.save_state())
    after = [env.step(a)[0] for a in [4, 3, 3, 0, 3]]
    ram = env.ram.copy()
    env.close()
    other = SuperMarioBros(EnvConfig())
    obs, _ = other.reset(options={"state": state_from_bytes(saved)})
    replayed = [other.step(a)[0] for a in [4, 3, 3, 0, 3]]
    other.close()
    assert all(np.array_equal(x, y) for x, y in zip(after, replayed)) and np.array_equal(other.ram, ram)


def test_states_of_archives_written_before_session_40_still_load():
    """Archives before session 39 held `np.savez_compressed` bytes (a zip), session 39's zlib over `np.savez`;
    today's are zlib over a header and the raw arrays."""
    env = SuperMarioBros(EnvConfig())
    env.reset(seed=2)
    state = env.save_state()
    env.close()
    buf = io.BytesIO()
    np.savez_compressed(
        buf,
        level=np.array(state.level),
        backend=np.array(state.backend),
        buttons=np.frombuffer(state.buttons, np.uint8),
        has_snapshot=np.array(True),
        snapshot=np.frombuffer(state.snapshot, np.uint8),
        stack=state.stack,
        ram=state.ram,
        rgb=state.rgb,
    )
    session_39 = io.BytesIO()
    with np.load(io.BytesIO(buf.getvalue())) as z:
        np.savez(session_39, **dict(z))
    for data in (buf.getvalue(), zlib.compress(session_39.getvalue(), 1), state_bytes(state)):
        back = state_from_bytes(data)
        assert (back.level, back.backend, back.buttons, back.snapshot) == (
            state.level,
            state.backend,
            state.buttons,
            state.snapshot,
        )
        assert all(np.array_equal(getattr(back, k), getattr(state, k)) for k in ("stack", "ram", "rgb"))


def _table(run):
    d = json.loads((run / "archive" / "cells.json").read_text())
    return d["cells"], [(r["round"], r["env_steps"], r["cells"], r["max_x"]) for r in d["rounds"]], d


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    run = tmp_path_factory.mktemp("explore") / "run"
    r = run_cli(*TINY, "--out", str(run))
    assert r.returncode == 0, r.stderr[-2000:]
    return run, r.stdout


def test_explore_end_to_end(uninterrupted):
    run, stdout = uninterrupted
    cells, rounds, d = _table(run)
    episodes = scan(run).episodes
    assert d["env_steps"] == sum(e["n_steps"] for e in episodes) >= 240 and rounds[-1][1] == d["env_steps"]
    assert d["emulator_frames"] == 4 * d["env_steps"], "retro restores from snapshots: no frames replayed"
    starts = [read_episode(run / e["file"]).meta["start"] for e in episodes]
    assert starts[:4] == ["spawn"] * 4 and all(s.startswith("cell:") for s in starts[4:])
    assert d["restores"] == len(starts) - 4
    keys = {c["key"] for c in cells}
    assert {s.removeprefix("cell:") for s in starts[4:]} <= keys
    assert d["max_x"] == max(c["x"] for c in cells) > 40 and "frontier x" in stdout
    files = {c["state_file"].partition(":")[0] for c in cells if not c["terminal"]}
    assert files == {p.name for p in (run / "archive" / "states").iterdir()}
    assert (run / "archive" / "archive.png").stat().st_size > 0


@pytest.mark.parametrize("workers", ["1", "2"])  # 2: worker processes play a round while the last is saved
def test_kills_then_resume_give_the_same_archive(uninterrupted, tmp_path, workers):
    run, _ = uninterrupted
    other = tmp_path / "run"
    cmd = [sys.executable, "-m", "lemario.cli", *TINY, "--workers", workers, "--out", str(other)]
    for _ in range(2):  # kill it twice, mid-round, then let it finish
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.time() + 120
        start = len(list(other.glob("explore-*.h5")))
        while time.time() < deadline and len(list(other.glob("explore-*.h5"))) < start + 6:
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    r = run_cli(*TINY, "--workers", workers, "--out", str(other))
    assert r.returncode == 0 and "resuming" in r.stdout
    assert _table(other)[:2] == _table(run)[:2]
    assert sorted(p.name for p in other.glob("explore-*.h5")) == sorted(p.name for p in run.glob("explore-*.h5"))


def test_several_levels_each_their_own_archive(tmp_path, capsys):
    from lemario.core.errors import LemarioError
    from lemario.play.explore import PRESETS, explore_main

    cfg = replace(PRESETS["tiny"], env_steps=40, out=tmp_path, levels=("1-1", "4-1"))
    explore_main(cfg)
    out = capsys.readouterr().out
    for level in ("1-1", "4-1"):
        assert json.loads((tmp_path / level / "archive" / "cells.json").read_text())["env_steps"] >= 40
        assert f"{level} archive:" in out
    assert {e["level"] for e in scan(tmp_path).episodes} == {"1-1", "4-1"} and "levels: 1-1" in out
    with pytest.raises(LemarioError, match="holds the levels 1-1 4-1: pass --levels 1-1 4-1"):
        explore_main(replace(cfg, levels=("1-1",)))


def test_bad_input_is_one_line(tmp_path):
    r = run_cli("explore", "--cell", "pixels", "--out", str(tmp_path / "x"))
    assert r.returncode == 2 and "unknown cell kind 'pixels'" in r.stderr
    r = run_cli("explore", "--choosing.novelty-scale", "median", "--out", str(tmp_path / "x"))
    assert r.returncode == 2 and "unknown --choosing.novelty-scale 'median': use one of max, rank" in r.stderr
    r = run_cli(*TINY, "--out", str(tmp_path / "y"))
    assert r.returncode == 0
    r = run_cli(*TINY, "--cell", "ram", "--out", str(tmp_path / "y"))
    assert r.returncode == 2 and "(cell: frame -> ram)" in r.stderr and len(r.stderr.strip().splitlines()) == 1
