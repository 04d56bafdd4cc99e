"""`lemario collect` and `lemario corpus` end to end: runs, resume after SIGKILL, one writer, bad input."""

import os
import resource
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from lemario.control.exploring import end_windows
from lemario.core.errors import LemarioError
from lemario.core.files import writer_lock
from lemario.data.corpus import format_summary, read_episode, read_meta, scan
from lemario.games.mario.env import EnvConfig
from lemario.games.mario.ram import LABELS
from lemario.play.collect import CollectConfig, collect, episode_agent, episode_seed, episode_windows

from conftest import run_cli

FAST = ["--max-steps", "80", "--no-progress"]


def test_cli_collect_and_summary(tmp_path):
    out = tmp_path / "c"
    r = run_cli("collect", "--preset", "tiny", "--out", str(out), "--episodes", "3", "--workers", "2", "--no-progress")
    assert r.returncode == 0, r.stderr
    assert "3 episodes" in r.stdout and "tier (max_x)" in r.stdout and "stuck 200-700" in r.stdout
    files = sorted(p.name for p in out.glob("*.h5"))
    assert files == ["run-0001-00000.h5", "run-0001-00001.h5", "run-0001-00002.h5"]
    ep = read_episode(out / files[1])
    assert ep.meta["seed"] == episode_seed(0, 1, 1) and ep.meta["policy"] == "biased" and ep.n_steps <= 60
    r = run_cli("corpus", str(out), "--rebuild")
    assert r.returncode == 0 and "3 episodes" in r.stdout


def test_rerun_adds_a_new_run(tmp_path):
    cfg = CollectConfig(out=tmp_path, episodes=2, workers=1, env=EnvConfig(max_steps=40), progress=False)
    collect(cfg)
    index = collect(cfg)
    assert sorted(e["file"] for e in index.episodes) == [
        "run-0001-00000.h5",
        "run-0001-00001.h5",
        "run-0002-00000.h5",
        "run-0002-00001.h5",
    ]
    seeds = {e["seed"] for e in index.episodes}
    assert len(seeds) == 4, "a new run plays new episodes"


def test_several_levels_make_one_corpus_of_sub_corpora(tmp_path):
    cfg = CollectConfig(
        out=tmp_path, episodes=1, workers=1, env=EnvConfig(max_steps=30), progress=False, levels=("1-1", "4-1")
    )
    index = collect(cfg)
    assert [(e["file"], e["level"]) for e in index.episodes] == [
        ("1-1/run-0001-00000.h5", "1-1"),
        ("4-1/run-0001-00000.h5", "4-1"),
    ]
    assert len({e["seed"] for e in index.episodes}) == 2, "each level its own seeds"
    assert read_episode(tmp_path / "4-1" / "run-0001-00000.h5").labels[0, LABELS.index("world")] == 4
    assert "levels: 1-1 1 episodes, 4-1 1 episodes" in format_summary(index)
    with pytest.raises(LemarioError, match=r"holds the levels 1-1 4-1: pass --levels 1-1 4-1, or use another --out"):
        collect(replace(cfg, levels=("1-1", "1-2")))
    with pytest.raises(LemarioError, match="names a level twice"):
        collect(replace(cfg, levels=("1-1", "1-1")))
    with pytest.raises(LemarioError, match="unknown level '9-1'"):
        collect(replace(cfg, levels=("1-1", "9-1")))


def test_a_named_run_is_played_once(tmp_path):
    cfg = CollectConfig(out=tmp_path, episodes=2, workers=1, env=EnvConfig(max_steps=30), progress=False, run="iter001")
    first = [e["file"] for e in collect(cfg).episodes]
    assert first == ["iter001-00000.h5", "iter001-00001.h5"]
    assert [e["file"] for e in collect(cfg).episodes] == first, "complete: re-running adds nothing"
    with pytest.raises(LemarioError, match="run iter001 .* another config"):
        collect(
            CollectConfig(
                out=tmp_path, episodes=3, workers=1, env=EnvConfig(max_steps=30), progress=False, run="iter001"
            )
        )
    index = collect(CollectConfig(out=tmp_path, episodes=1, workers=1, env=EnvConfig(max_steps=30), progress=False))
    assert "run-0002-00000.h5" in [e["file"] for e in index.episodes], "unnamed runs number on after named ones"


def test_the_on_policy_share_is_spread_over_the_episodes():
    def explores(share: float, n: int) -> list[float]:
        return [episode_agent(CollectConfig(explore=0.2, on_policy=share), i)[1] for i in range(n)]

    assert explores(0.0, 4) == [0.2] * 4 and explores(1.0, 4) == [0.0] * 4
    assert explores(0.5, 6) == [0.2, 0.0] * 3, "half: every other episode, so a partial run holds both"
    assert explores(0.25, 8) == [0.2, 0.2, 0.2, 0.0] * 2
    assert explores(0.3, 10).count(0.0) == 3


def test_on_policy_agents_play_the_on_policy_episodes_in_turn():
    cfg = CollectConfig(policy="biased", explore=0.2, on_policy=0.5, on_policy_agents=("uniform", "covering"))
    assert [episode_agent(cfg, i) for i in range(6)] == [
        ("biased", 0.2), ("uniform", 0.0), ("biased", 0.2), ("covering", 0.0), ("biased", 0.2), ("uniform", 0.0)
    ]  # fmt: skip
    third = replace(cfg, on_policy=1 / 3, on_policy_agents=("uniform", "covering", "biased"))
    assert [episode_agent(third, i)[0] for i in range(2, 9, 3)] == ["uniform", "covering", "biased"]
    with pytest.raises(LemarioError, match="--on-policy SHARE > 0"):
        replace(cfg, on_policy=0.0).validate()


def test_on_policy_episodes_record_no_exploration(tmp_path):
    cfg = CollectConfig(
        out=tmp_path,
        episodes=2,
        workers=1,
        env=EnvConfig(max_steps=60),
        progress=False,
        explore=0.5,
        explore_x=(0, 3000),
        on_policy=0.5,
    )
    collect(cfg)
    explored, alone = (read_episode(tmp_path / f"run-0001-0000{i}.h5").meta for i in (0, 1))
    assert explored["explore"] == 0.5 and explored["explored_steps"] > 0 and explored["explore_x"] == [0, 3000]
    assert alone["explore"] == 0.0 and alone["explored_steps"] == 0 and alone["explore_x"] == []
    assert explored["seed"] == episode_seed(0, 1, 0) and alone["seed"] == episode_seed(0, 1, 1), "seeds as before"
    collect(replace(cfg, on_policy_agents=("uniform",), run="others"))
    explored, alone = (read_episode(tmp_path / f"others-0000{i}.h5").meta for i in (0, 1))
    assert (explored["policy"], explored["explore"]) == ("biased", 0.5) and (alone["policy"], alone["explore"]) == (
        "uniform",
        0.0,
    ), "the on-policy episode is the other agent's, with no exploration"


def test_explore_at_ends_explores_before_where_the_on_policy_episodes_ended(tmp_path):
    cfg = CollectConfig(
        out=tmp_path,
        episodes=6,
        workers=1,
        env=EnvConfig(max_steps=40),
        progress=False,
        policy="uniform",
        explore=0.5,
        explore_at_ends=2,
        on_policy=0.5,
    )
    windows = [(0, 2, 4), (1, 3, 5)]  # explored: 0, 2, 4; on-policy: 1, 3, 5
    assert [episode_agent(cfg, i)[1] for i in range(6)] == [0.5, 0.0] * 3
    assert [episode_windows(cfg, i, (10, 20, 30, 40)) for i in range(6)] == [
        (10, 20), (), (30, 40), (), (10, 20), ()
    ], "one window an explored episode, in turn"  # fmt: skip
    collect(cfg)
    metas = [read_meta(tmp_path / f"run-0001-{i:05d}.h5") for i in range(6)]
    ends = [metas[i]["death_x"] if metas[i]["death_x"] >= 0 else metas[i]["max_x"] for i in windows[1]]
    expected = end_windows(ends, 2)
    assert expected and [tuple(metas[i]["explore_x"]) for i in windows[0]] == [
        episode_windows(cfg, i, expected) for i in windows[0]
    ]
    assert all(metas[i]["explore_x"] == [] for i in windows[1])
    first = read_episode(tmp_path / "run-0001-00002.h5")
    (tmp_path / "run-0001-00002.h5").unlink()  # a kill before it was written: the resume finds the same windows
    collect(cfg)
    again = read_episode(tmp_path / "run-0001-00002.h5")
    assert again.meta["explore_x"] == first.meta["explore_x"] and np.array_equal(again.actions, first.actions)


def test_exploring_agent_mixes_in_biased_macros(make_env):
    from lemario.control.agents import ScriptedAgent
    from lemario.control.exploring import ExploringAgent
    from lemario.play.episodes import play_episode

    env = make_env(max_steps=120)
    uniform = play_episode(env, "uniform", 5)
    same = play_episode(env, ExploringAgent(ScriptedAgent("uniform", env.config), 0.0, "complex"), 5, "uniform")
    assert np.array_equal(same.actions, uniform.actions), "epsilon 0 is the agent itself"
    explored = play_episode(
        env, ExploringAgent(ScriptedAgent("uniform", env.config), 0.3, "complex"), 5, "uniform+explore"
    )
    n = min(len(explored.actions), len(uniform.actions))
    assert (explored.actions[:n] != uniform.actions[:n]).any() and explored.meta["policy"] == "uniform+explore"
    beyond = play_episode(env, ExploringAgent(ScriptedAgent("uniform", env.config), 1.0, "complex", (3000, 4000)), 5)
    assert np.array_equal(beyond.actions, uniform.actions), "no macro starts outside the x windows"
    assert beyond.meta["explored_steps"] == 0
    always = ExploringAgent(ScriptedAgent("uniform", env.config), 1.0, "complex")
    always.reset(0)
    acts = [always.act(None, {}) for _ in range(200)]
    right = {1, 2, 3, 4}  # complex set: right, right+A, right+B, right+A+B
    assert np.mean([a in right for a in acts]) > 0.8, "epsilon 1 plays the right-biased macros only"


def test_sigkill_then_rerun_completes_the_same_corpus(tmp_path):
    args = [
        "collect",
        "--out",
        str(tmp_path / "killed"),
        "--episodes",
        "10",
        "--workers",
        "2",
        "--max-steps",
        "300",
        "--no-progress",
    ]
    proc = subprocess.Popen(
        [sys.executable, "-m", "lemario.cli", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    deadline = time.time() + 120
    while len(list((tmp_path / "killed").glob("run-*.h5"))) < 3 and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    time.sleep(0.5)  # the workers die with their parent (`die_with`)
    index = scan(tmp_path / "killed")
    assert not index.bad and 3 <= len(index.episodes) < 10
    r = run_cli(*args)
    assert r.returncode == 0, r.stderr
    assert "resuming run-0001" in r.stdout
    killed = sorted((tmp_path / "killed").glob("*.h5"))
    assert [p.name for p in killed] == [f"run-0001-{i:05d}.h5" for i in range(10)]
    assert not list((tmp_path / "killed").glob(".*.tmp"))
    # the interrupted-then-resumed corpus equals an uninterrupted one
    straight = collect(
        CollectConfig(out=tmp_path / "straight", episodes=10, workers=2, env=EnvConfig(max_steps=300), progress=False)
    )
    assert len(straight.episodes) == 10
    for p in killed:
        a, b = read_episode(p), read_episode(tmp_path / "straight" / p.name)
        np.testing.assert_array_equal(a.actions, b.actions)
        np.testing.assert_array_equal(a.frames, b.frames)


def test_second_writer_is_refused(tmp_path):
    with writer_lock(tmp_path):
        r = run_cli("collect", "--out", str(tmp_path), "--episodes", "1", *FAST)
    assert r.returncode == 2
    assert "being written by another lemario process" in r.stderr and len(r.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "args,message",
    [
        (["--level", "9-9"], "unknown level '9-9'"),
        (["--backend", "snes"], "unknown backend 'snes'"),
        (["--action-set", "all"], "unknown action set 'all'"),
        (["--policy", "smart"], "unknown agent 'smart'"),
        (["--rom", "/nonexistent/smb.nes"], "ROM not found at /nonexistent/smb.nes"),
        (["--on-policy", "1.5"], "--on-policy 1.5 is not a share of episodes"),
    ],
)
def test_bad_input_is_one_clear_line(tmp_path, args, message):
    r = run_cli("collect", "--out", str(tmp_path / "c"), "--episodes", "1", *FAST, *args)
    assert r.returncode == 2, r.stderr
    assert message in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_unwritable_output_folder(tmp_path):
    (tmp_path / "file").write_text("")
    r = run_cli("collect", "--out", str(tmp_path / "file" / "corpus"), "--episodes", "1", *FAST)
    assert r.returncode == 2 and "cannot write to" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_wrong_rom_is_refused(tmp_path):
    rom = tmp_path / "other.nes"
    rom.write_bytes(b"NES\x1a" + bytes(40000))
    r = run_cli("collect", "--out", str(tmp_path / "c"), "--episodes", "1", *FAST, "--rom", str(rom))
    assert r.returncode == 2 and "sha1" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def _assert_full_disk_run(out: Path, r: subprocess.CompletedProcess):
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "out of disk space" in lines[0] and "already written are intact" in lines[0], r.stderr
    index = scan(out, write=False)
    assert index.episodes and not index.bad, "episodes written before the disk filled stay readable"
    for e in index.episodes:
        read_episode(out / e["file"], ram=True)
    assert not list(out.glob(".*.tmp"))


def test_file_size_limit_mid_run_keeps_written_episodes(tmp_path):
    """RLIMIT_FSIZE makes the kernel refuse writes past a size (EFBIG), like a full disk, without root."""
    out = tmp_path / "c"
    limit = 150_000  # a few short episodes fit, a long one does not

    def limit_file_size():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)

    r = run_cli(
        "collect",
        "--out",
        str(out),
        "--episodes",
        "40",
        "--workers",
        "1",
        "--max-steps",
        "1500",
        "--no-progress",
        "--policy",
        "biased",
        preexec_fn=limit_file_size,
    )
    _assert_full_disk_run(out, r)


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")
def test_disk_fills_up_mid_run(tmp_path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    if (
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=400k", "tmpfs", str(mnt)], capture_output=True).returncode
        != 0
    ):
        pytest.skip("tmpfs mount not permitted here (the RLIMIT_FSIZE test covers the same path)")
    try:
        out = mnt / "c"
        r = run_cli(
            "collect", "--out", str(out), "--episodes", "40", "--workers", "2", "--max-steps", "1500", "--no-progress"
        )
        _assert_full_disk_run(out, r)
    finally:
        subprocess.run(["umount", "-l", str(mnt)])
