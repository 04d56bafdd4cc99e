"""Episode files round-trip; the index rebuilds and skips damaged files; the buffer samples correct windows."""

import json

import h5py
import numpy as np
import pytest

from lemario.core.errors import LemarioError
from lemario.data.buffer import EpisodeBuffer, stored_ram, window_probabilities, with_deaths_share
from lemario.data.corpus import INDEX_NAME, read_episode, scan, summarize, write_episode
from lemario.data.tiers import audit
from lemario.games.mario.ram import LABELS, label_table
from lemario.games.mario.rewards import REWARD_CHANNELS, REWARD_SPEC_VERSION
from lemario.play.episodes import play_episode

from synthetic import make_episode


@pytest.fixture(scope="module")
def episodes():
    from lemario.games.mario.env import EnvConfig, SuperMarioBros

    env = SuperMarioBros(EnvConfig(max_steps=80))
    eps = [play_episode(env, "biased", seed) for seed in range(3)]
    env.close()
    for i, ep in enumerate(eps):
        ep.meta.update(run="run-0001", run_index=i)
    return eps


def test_round_trip(tmp_path, episodes):
    ep = episodes[0]
    size = write_episode(tmp_path / "a.h5", ep)
    assert size > 0 and not list(tmp_path.glob(".*"))
    back = read_episode(tmp_path / "a.h5", ram=True)
    for k in ("frames", "actions", "ram", "labels", "rewards"):
        np.testing.assert_array_equal(getattr(back, k), getattr(ep, k))
    assert back.frames.shape == (ep.n_steps + 1, 84, 84)
    assert back.meta["level"] == "1-1" and back.meta["backend"] == "retro" and back.meta["policy"] == "biased"
    assert back.meta["reward_spec_version"] == REWARD_SPEC_VERSION and back.meta["lemario_version"]
    assert back.meta["label_names"] == list(LABELS)
    row = summarize(tmp_path / "a.h5")
    assert row["n_steps"] == ep.n_steps and row["max_x"] == ep.labels[:, 0].max()


def test_frames_compress(tmp_path, episodes):
    ep = episodes[0]
    size = write_episode(tmp_path / "a.h5", ep)
    raw = ep.frames.nbytes + ep.ram.nbytes
    assert size < raw / 5


def test_index_rebuilds_and_skips_damaged_files(tmp_path, episodes):
    for i, ep in enumerate(episodes):
        write_episode(tmp_path / f"run-0001-{i:05d}.h5", ep)
    index = scan(tmp_path)
    assert len(index.episodes) == 3 and not index.bad
    assert index.frames == sum(e.n_steps + 1 for e in episodes)
    # truncate one file, garble another's index row, add junk
    path = tmp_path / "run-0001-00001.h5"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    (tmp_path / "junk.h5").write_bytes(b"not hdf5")
    index = scan(tmp_path)
    assert [e["file"] for e in index.episodes] == ["run-0001-00000.h5", "run-0001-00002.h5"]
    assert {b["file"] for b in index.bad} == {"run-0001-00001.h5", "junk.h5"}
    (tmp_path / INDEX_NAME).write_text("{ not json")
    assert len(scan(tmp_path).episodes) == 2
    (tmp_path / INDEX_NAME).unlink()
    assert len(scan(tmp_path).episodes) == 2
    with pytest.raises(LemarioError, match=r"2 unreadable episode file\(s\) in .*: junk.h5 \(OSError.*move them out"):
        EpisodeBuffer.load(tmp_path)  # a reader refuses them, naming them and the fix
    buf = EpisodeBuffer.load(tmp_path, skip_unreadable=True)  # or leaves them out when told to
    assert len(buf.lengths) == 2
    assert len(EpisodeBuffer.load(tmp_path, files=["run-0001-00002.h5"]).lengths) == 1  # not one of those to read


def test_a_corpus_reads_its_sub_corpora(tmp_path, episodes):
    """Episodes one folder down (an exploration run, a linked corpus) belong to the corpus as SUB/<file>; a
    sub-corpus's own index is reused, not rebuilt."""
    corpus = tmp_path / "corpus"
    (corpus / "explore" / "archive").mkdir(parents=True)
    write_episode(corpus / "run-0001-00000.h5", episodes[0])
    (tmp_path / "other").mkdir()
    write_episode(tmp_path / "other" / "run-0001-00000.h5", episodes[1])
    (corpus / "linked").symlink_to(tmp_path / "other")
    write_episode(corpus / "explore" / "explore-000001-000.h5", episodes[2])
    write_episode(corpus / "explore" / "archive" / "deeper.h5", episodes[2])  # two levels down: not the corpus's
    scan(corpus / "explore")  # the sub-corpus's own index
    cached = json.loads((corpus / "explore" / INDEX_NAME).read_text())["episodes"][0]
    index = scan(corpus)
    files = [e["file"] for e in index.episodes]
    assert files == ["run-0001-00000.h5", "explore/explore-000001-000.h5", "linked/run-0001-00000.h5"]
    assert index.episodes[1] == {**cached, "file": "explore/explore-000001-000.h5"}
    buf = EpisodeBuffer.load(corpus)
    assert buf.files == files and list(buf.lengths) == [episodes[i].n_steps + 1 for i in (0, 2, 1)]
    assert len(EpisodeBuffer.load(corpus, files=["linked/run-0001-00000.h5"]).lengths) == 1
    ram = stored_ram(corpus, buf.files)  # back to back as the buffer holds the frames: its labels come from it
    np.testing.assert_array_equal(label_table(ram), buf.labels)


def test_audit_table_shares():
    rows = audit(
        [
            {"max_x": 100, "flag_get": 0, "n_steps": 9},
            {"max_x": 700, "flag_get": 0, "n_steps": 29},
            {"max_x": 650, "flag_get": 0, "n_steps": 19},
            {"max_x": 3161, "flag_get": 1, "n_steps": 39},
        ]
    )
    table = {r["tier"]: (r["episodes"], r["frames"], r["share"]) for r in rows}
    assert table == {
        "dead <200": (1, 10, 0.1),
        "stuck 200-700": (1, 20, 0.2),
        "mid 700-1500": (1, 30, 0.3),
        "elite >=1500": (0, 0, 0.0),
        "flag": (1, 40, 0.4),
    }  # a flag episode is a tier above the elite; 700 is mid (tiers are [lo, hi))


def _buffer(labels: np.ndarray, episode_starts: np.ndarray) -> EpisodeBuffer:
    """A buffer of label rows alone (what window probabilities read)."""
    n = len(labels)
    return EpisodeBuffer(
        frames=np.zeros((n, 1, 1), np.uint8),
        actions=np.zeros(n, np.int64),
        rewards=np.zeros((n, 4), np.float32),
        labels=labels,
        episode_start=np.repeat(episode_starts, np.diff(np.r_[episode_starts, n])),
        starts=episode_starts,
        lengths=np.diff(np.r_[episode_starts, n]),
        files=[f"e{i}" for i in range(len(episode_starts))],
        action_set="complex",
    )


def test_oversampled_tiers_are_drawn_by_their_weights():
    # three episodes of 11 frames: dead (max_x 100), elite (1600), flag; windows of k = 2: 9 per episode
    labels = np.zeros((33, len(LABELS)), np.int32)
    labels[:11, LABELS.index("x_pos")] = 100
    labels[11:22, LABELS.index("x_pos")] = 1600
    labels[22:, LABELS.index("x_pos")] = 3161
    labels[32, LABELS.index("flag_get")] = 1
    buf = _buffer(labels, np.array([0, 11, 22]))
    windows = buf.window_starts(2)
    p = window_probabilities(buf, windows, (1, 1, 1, 2, 4))
    np.testing.assert_allclose(p, np.repeat([1, 2, 4], 9) / (9 * 7))
    assert window_probabilities(buf, windows, ()) is None
    assert window_probabilities(buf, windows, (3, 3, 3, 3, 3)) is None, "equal weights: uniform"
    with pytest.raises(LemarioError, match="give 5 weights >= 0, one per tier"):
        window_probabilities(buf, windows, (1, 2))
    with pytest.raises(LemarioError, match="weight 0"):
        window_probabilities(buf, windows, (0, 1, 1, 0, 0))


def test_levels_are_balanced_whatever_their_share_of_frames():
    # 1-1: two episodes of 11 frames (18 windows of k = 2); 4-1: one of 31 (29 windows)
    labels = np.zeros((53, len(LABELS)), np.int32)
    labels[:, LABELS.index("world")], labels[:, LABELS.index("stage")] = 1, 1
    labels[22:, LABELS.index("world")] = 4
    labels[11:22, LABELS.index("x_pos")] = 1600  # the second 1-1 episode is elite
    buf = _buffer(labels, np.array([0, 11, 22]))
    windows = buf.window_starts(2)
    p = window_probabilities(buf, windows, balance_levels=True)
    assert p[:18].sum() == pytest.approx(0.5) and p[18:].sum() == pytest.approx(0.5)
    np.testing.assert_allclose(p[18:], 0.5 / 29)
    p = window_probabilities(buf, windows, (1, 1, 1, 3, 1), balance_levels=True)  # weights share a level's half
    np.testing.assert_allclose(p[:9], 0.5 / 36)
    np.testing.assert_allclose(p[9:18], 1.5 / 36)
    assert p[18:].sum() == pytest.approx(0.5)
    one_level = _buffer(labels[:22], np.array([0, 11]))
    assert window_probabilities(one_level, one_level.window_starts(2), balance_levels=True) is None


def test_a_share_of_starts_lies_before_the_deaths():
    # two episodes of 10 frames; the first dies: its step 6 leads into the first doomed frame, 7
    buf = _buffer(np.zeros((20, len(LABELS)), np.int32), np.array([0, 10]))
    buf.rewards[6:9, REWARD_CHANNELS.index("death")] = 1  # doomed from frame 7 through the end
    frames = np.arange(20)
    np.testing.assert_array_equal(buf.before_deaths(frames, 3), np.isin(frames, [4, 5, 6]))
    np.testing.assert_array_equal(buf.before_deaths(frames, 30), frames < 7)  # not past the episode's start
    p = with_deaths_share(buf, frames, None, 0.6, 3)
    np.testing.assert_allclose(p, 0.4 / 20 + np.isin(frames, [4, 5, 6]) * 0.6 / 3)
    tiers = np.r_[np.full(10, 0.02), np.full(10, 0.08)]  # another weighting keeps the rest of the mass
    np.testing.assert_allclose(with_deaths_share(buf, frames, tiers, 0.5, 3)[10:], 0.04)
    buf.rewards[:] = 0
    with pytest.raises(LemarioError, match="no death to start before"):
        with_deaths_share(buf, frames, None, 0.5, 3)


def test_buffer_windows(tmp_path, episodes):
    for i, ep in enumerate(episodes):
        write_episode(tmp_path / f"run-0001-{i:05d}.h5", ep)
    buf = EpisodeBuffer.load(tmp_path)
    assert len(buf) == sum(e.n_steps + 1 for e in episodes)
    k, stack = 4, 4
    batch = buf.sample(64, k, stack, np.random.default_rng(0))
    assert batch["obs"].shape == (64, k + 1, stack, 84, 84) and batch["obs"].dtype == np.uint8
    assert batch["actions"].shape == (64, k) and (batch["actions"] >= 0).all()
    assert batch["rewards"].shape == (64, k, 4) and batch["labels"].shape == (64, k + 1, len(LABELS))
    # check every window against the episodes themselves
    rng = np.random.default_rng(1)
    valid = buf.window_starts(k)
    for i in rng.choice(valid, 30):
        e = int(np.searchsorted(buf.starts, i, side="right") - 1)
        ep, t0 = episodes[e], i - buf.starts[e]
        one = buf.sample(1, k, stack, rng, valid=np.array([i]))
        for t in range(k + 1):
            for s in range(stack):
                src = max(t0 + t - (stack - 1 - s), 0)
                np.testing.assert_array_equal(one["obs"][0, t, s], ep.frames[src])
        np.testing.assert_array_equal(one["actions"][0], ep.actions[t0 : t0 + k])
        assert one["prev"][0] == (ep.actions[t0 - 1] if t0 > 0 else 0), "the action before, NOOP at the start"
        np.testing.assert_array_equal(one["rewards"][0], ep.rewards[t0 : t0 + k])


def test_old_reward_spec_is_relabelled_or_refused(tmp_path, episodes):
    ep = episodes[0]
    write_episode(tmp_path / "old.h5", ep)
    with h5py.File(tmp_path / "old.h5", "r+") as f:
        meta = json.loads(f.attrs["meta"])
        f.attrs["meta"] = json.dumps({**meta, "reward_spec_version": 0})
        f["rewards"][...] = 99.0
    with pytest.raises(LemarioError, match="reward spec"):
        EpisodeBuffer.load(tmp_path, relabel=False)
    buf = EpisodeBuffer.load(tmp_path)
    np.testing.assert_array_equal(buf.rewards[:-1], ep.rewards)


def test_a_corpus_from_before_the_flag_is_relabelled_with_it(tmp_path):
    """A v2 episode stores three reward channels; loading relabels all four from its RAM labels."""
    ep = make_episode(np.random.default_rng(3), 30)
    ep.labels[-1, LABELS.index("flag_get")] = 1  # it ends on the flagpole
    write_episode(tmp_path / "v2.h5", ep)
    with h5py.File(tmp_path / "v2.h5", "r+") as f:
        f.attrs["meta"] = json.dumps({**json.loads(f.attrs["meta"]), "reward_spec_version": 2})
        del f["rewards"]
        f.create_dataset("rewards", data=ep.rewards[:, :3])
    buf = EpisodeBuffer.load(tmp_path)
    assert buf.rewards.shape == (31, 4) and buf.rewards[:, 3].tolist() == [0.0] * 29 + [1.0, 0.0]
    np.testing.assert_array_equal(buf.rewards[:-1, :3], ep.rewards[:, :3])


def test_changed_label_schema_is_relabelled_from_ram(tmp_path, episodes):
    ep = episodes[1]
    write_episode(tmp_path / "e.h5", ep)
    with h5py.File(tmp_path / "e.h5", "r+") as f:
        f["labels"].attrs["names"] = json.dumps(["old"] * len(LABELS))
        f["labels"][...] = -1
    buf = EpisodeBuffer.load(tmp_path)
    np.testing.assert_array_equal(buf.labels, ep.labels)


def test_a_corpus_mixing_label_frames_is_loaded_with_a_warning(tmp_path, episodes, capsys):
    assert all(ep.meta["ram_frame"] == "shown" for ep in episodes)
    for i, ep in enumerate(episodes[:2]):
        write_episode(tmp_path / f"run-0001-{i:05d}.h5", ep)
    with h5py.File(tmp_path / "run-0001-00001.h5", "r+") as f:  # written before episodes recorded their frame
        meta = json.loads(f.attrs["meta"])
        del meta["ram_frame"]
        f.attrs["meta"] = json.dumps(meta)
    buf = EpisodeBuffer.load(tmp_path)
    assert len(buf.files) == 2 and "mixes labels of the shown frame" in capsys.readouterr().err


def test_empty_corpus_is_a_clear_error(tmp_path):
    with pytest.raises(LemarioError, match="no readable episodes"):
        EpisodeBuffer.load(tmp_path)
    with pytest.raises(LemarioError, match="does not exist"):
        scan(tmp_path / "nope")
