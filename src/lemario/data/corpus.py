"""The episode corpus: one HDF5 file per episode, written atomically, and an index that is always rebuildable.

Layout of `DIR/<run>-<index>.h5` (schema 1), for either game (meta `game`: 'mario', the default, or 'push'):
    frames   (T+1, H, W[, 3]) uint8, gzip-1  preprocessed single frames; frames[0] is the reset frame
    actions  (T,) uint8 | (T, A) float32     Mario: the action index taken after frames[t]; push: both discs'
                                             thrusts (amber x, y, cyan x, y), the idle disc's zero
    labels   (T+1, L) int32 | float32        per-frame labels, column names in attr `names`: Mario's RAM labels
                                             (`lemario.games.mario.ram.LABELS`), the push board's state vector
                                             (`lemario.games.push.board.STATE_NAMES`)
    ram      (T+1, 2048)      uint8, gzip-1  Mario only: full RAM of each frame (relabelling needs nothing else):
                                             the RAM its screen shows (meta ram_frame 'shown'); files without
                                             ram_frame hold the RAM one emulator frame later ('end')
    rewards  (T, 4)           float32        Mario only: `lemario.games.mario.rewards.REWARD_CHANNELS` (attr
                                             `channels`; meta `reward_spec_version`)
    attrs: game, seed, policy, run, ...; Mario: level, backend, action_set, frame settings, reward_spec_version

A file is written under a temporary name, fsynced, then renamed: a reader sees a whole episode or none.
`index.json` caches each file's summary; `scan()` rebuilds it from the files (only new or changed files are
opened), and reports a truncated or corrupt file instead of failing on it.

A corpus also holds the episodes of its sub-corpora, the folders one level down (`DIR/SUB/*.h5`, named
`SUB/<file>` in its index): an exploration run beside the collector's episodes (the flywheel's
`RUN/corpus/explore`), or other corpora linked in (`ln -s ../corpus-a a`). Each sub-corpus keeps its own writer
and index.
"""

from __future__ import annotations

import io
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from lemario import __version__
from lemario.core.errors import LemarioError
from lemario.core.files import atomic_write_bytes, atomic_write_text
from lemario.data.tiers import audit
from lemario.games.mario.ram import LABELS
from lemario.games.mario.rewards import REWARD_CHANNELS, REWARD_SPEC_VERSION

SCHEMA_VERSION = 1
INDEX_NAME = "index.json"


@dataclass
class Episode:
    frames: np.ndarray  # (T+1, H, W[, 3]) uint8
    actions: np.ndarray  # (T,) uint8 Mario action indices, or (T, A) float32 push thrusts
    ram: np.ndarray | None  # (T+1, 2048) uint8; None when read without it, or for a game without RAM
    labels: np.ndarray  # (T+1, L) int32 Mario RAM labels, or float32 push board states
    rewards: np.ndarray | None  # (T, 4) float32 Mario reward channels; None for a game without them
    meta: dict
    label_names: tuple[str, ...] = LABELS

    @property
    def n_steps(self) -> int:
        return len(self.actions)


def write_episode(path: Path, ep: Episode) -> int:
    """Write one episode atomically; returns its size in bytes. Raises OSError (e.g. disk full) untouched.

    The HDF5 file is built in memory and written with plain file I/O: HDF5's own writer can crash the process
    when the disk fills up, a plain write fails with a clean OSError.
    """
    T = ep.n_steps
    assert ep.frames.shape[0] == T + 1 and ep.labels.shape[0] == T + 1
    assert ep.rewards is None or ep.rewards.shape == (T, len(REWARD_CHANNELS))
    image = io.BytesIO()
    with h5py.File(image, "w") as f:
        chunk = min(64, T + 1)
        f.create_dataset(
            "frames", data=ep.frames, compression="gzip", compression_opts=1, chunks=(chunk, *ep.frames.shape[1:])
        )
        f.create_dataset("actions", data=_stored(ep.actions, np.uint8))
        labels = f.create_dataset("labels", data=_stored(ep.labels, np.int32))
        labels.attrs["names"] = json.dumps(list(ep.label_names))
        if ep.ram is not None:
            f.create_dataset(
                "ram", data=ep.ram, compression="gzip", compression_opts=1, chunks=(chunk, ep.ram.shape[1])
            )
        if ep.rewards is not None:
            rw = f.create_dataset("rewards", data=ep.rewards.astype(np.float32))
            rw.attrs["channels"] = json.dumps(list(REWARD_CHANNELS))
        meta = {"schema_version": SCHEMA_VERSION, "lemario_version": __version__, "game": "mario", **ep.meta}
        if meta["game"] == "mario":
            meta.setdefault("reward_spec_version", REWARD_SPEC_VERSION)
        f.attrs["meta"] = json.dumps(meta, default=_jsonable)
    data = image.getbuffer()
    atomic_write_bytes(path, data)
    return len(data)


def _stored(a: np.ndarray, integer: type) -> np.ndarray:
    """Integer arrays as `integer`, anything else as float32."""
    return a.astype(integer if np.issubdtype(a.dtype, np.integer) else np.float32)


def _jsonable(v):
    if isinstance(v, np.generic):
        return v.item()
    return str(v)


def file_meta(f: h5py.File) -> dict:
    """An open episode file's meta, with its label column names (`label_names`)."""
    meta = json.loads(f.attrs["meta"])
    meta["label_names"] = json.loads(f["labels"].attrs["names"])
    return meta


def read_episode(path: Path, *, ram: bool = False) -> Episode:
    """Read one episode (RAM only when asked: it is the largest dataset after the frames)."""
    with h5py.File(path, "r") as f:
        meta = file_meta(f)
        return Episode(
            frames=f["frames"][()],
            actions=f["actions"][()],
            ram=f["ram"][()] if ram and "ram" in f else None,
            labels=f["labels"][()],
            rewards=f["rewards"][()] if "rewards" in f else None,
            meta=meta,
            label_names=tuple(meta["label_names"]),
        )


def read_meta(path: Path) -> dict:
    """One episode's meta alone (nothing else read)."""
    with h5py.File(path, "r") as f:
        return json.loads(f.attrs["meta"])


def read_labels(path: Path) -> np.ndarray:
    """(T+1, L) one episode's labels alone (no frames read)."""
    with h5py.File(path, "r") as f:
        return f["labels"][()]


def summarize(path: Path) -> dict:
    """The index row of one episode file; raises on a truncated or inconsistent file."""
    with h5py.File(path, "r") as f:
        meta = file_meta(f)
        T = f["actions"].shape[0]
        shapes = {k: f[k].shape[0] for k in ("frames", "ram", "labels", "rewards") if k in f}
        if meta.get("game", "mario") == "mario" and len(shapes) < 4:
            raise ValueError(f"a Mario episode without {', '.join(sorted({'ram', 'rewards'} - set(shapes)))}")
        if any(n != T + (k != "rewards") for k, n in shapes.items()):
            raise ValueError(f"inconsistent lengths: {T} actions, {shapes}")
        f["frames"][-1]  # the last chunk decompresses: the file is complete
    return index_row(path, meta, T)


EXPLORE_RUN = "explore"
"""The run name of the frontier explorer's episodes (`lemario explore`): explorations that start from restored cells
and stop after a few steps, not episodes played from spawn."""


def index_row(path: Path, meta: dict, n_steps: int) -> dict:
    """The index's summary of an episode file (its size and mtime tell whether the row is still current)."""
    stat = path.stat()
    row = {
        "file": path.name,
        "n_steps": int(n_steps),
        "game": meta.get("game", "mario"),
        "policy": meta["policy"],
        "run": meta.get("run", ""),
        "run_index": int(meta.get("run_index", -1)),
        "seed": int(meta["seed"]),
        "bytes": stat.st_size,
        "mtime": stat.st_mtime,
    }
    if row["game"] == "mario":
        row.update(
            max_x=int(meta["max_x"]),
            flag_get=int(meta["flag_get"]),
            explore=float(meta.get("explore", 0.0)),
            level=meta["level"],
            backend=meta["backend"],
            reward_spec_version=int(meta.get("reward_spec_version", REWARD_SPEC_VERSION)),
        )
    return row


@dataclass
class Index:
    episodes: list[dict]
    bad: list[dict]

    @property
    def frames(self) -> int:
        return sum(e["n_steps"] + 1 for e in self.episodes)


def episode_files(corpus: Path) -> list[Path]:
    """The episode files of a corpus folder, then of its sub-corpora, each in name order (temporary files and
    folders left out)."""
    own = sorted(p for p in corpus.glob("*.h5") if not p.name.startswith("."))
    subs = sorted(p for p in corpus.glob("*/*.h5") if not (p.name.startswith(".") or p.parent.name.startswith(".")))
    return own + subs


def _cached_rows(corpus: Path) -> dict[str, dict]:
    """Index rows by file: the corpus's own index, with its sub-corpora's indexes for files it has not seen."""
    rows = {}
    for sub in sorted(p for p in corpus.glob(f"*/{INDEX_NAME}") if not p.parent.name.startswith(".")):
        prefix = sub.parent.name
        rows.update({f"{prefix}/{e['file']}": {**e, "file": f"{prefix}/{e['file']}"} for e in _index_rows(sub)})
    rows.update({e["file"]: e for e in _index_rows(corpus / INDEX_NAME)})
    return rows


def _index_rows(path: Path) -> list[dict]:
    try:
        return json.loads(path.read_text())["episodes"]
    except (OSError, ValueError, KeyError, TypeError):
        return []  # no index yet, or a damaged one: it is rebuilt from the files


def _write_index(corpus: Path, episodes: list[dict], bad: list[dict]) -> None:
    try:
        atomic_write_text(
            corpus / INDEX_NAME, json.dumps({"version": SCHEMA_VERSION, "episodes": episodes, "bad": bad})
        )
    except OSError:
        pass  # the index is a cache; a full or read-only disk must not stop a reader


def add_to_index(corpus: Path, rows: list[dict]) -> None:
    """Record rows of newly written episodes (the writer knows them; nobody reopens the files)."""
    cached = _cached_rows(corpus)
    cached.update({r["file"]: r for r in rows})
    _write_index(corpus, sorted(cached.values(), key=lambda r: r["file"]), [])


def scan(corpus: Path, *, write: bool = True) -> Index:
    """Index of every episode file in `corpus`, reusing cached rows of unchanged files; bad files are listed."""
    corpus = Path(corpus)
    if not corpus.is_dir():
        raise LemarioError(f"corpus folder {corpus} does not exist: collect one with `lemario collect --out {corpus}`")
    cached = _cached_rows(corpus)
    episodes, bad = [], []
    for path in episode_files(corpus):
        stat, name = path.stat(), path.relative_to(corpus).as_posix()
        row = cached.get(name)
        if row and row["bytes"] == stat.st_size and row["mtime"] == stat.st_mtime:
            episodes.append(row)
            continue
        try:
            episodes.append({**summarize(path), "file": name})
        except Exception as e:  # noqa: BLE001 - any unreadable file is reported and skipped
            bad.append({"file": name, "error": f"{type(e).__name__}: {e}".splitlines()[0][:200]})
    if write:
        _write_index(corpus, episodes, bad)
    return Index(episodes, bad)


def format_summary(index: Index, title: str = "corpus") -> str:
    """A corpus's episodes and frames, max_x, flags, the audit table by tier and the unreadable files."""
    eps = index.episodes
    lines = [f"{title}: {len(eps)} episodes, {index.frames} frames"]
    games = sorted({e.get("game", "mario") for e in eps})
    if games and games != ["mario"]:
        lines.append(f"game: {', '.join(games)}")
        eps = [e for e in eps if e.get("game", "mario") == "mario"]
        if not eps:
            return "\n".join(lines + _unreadable_line(index))
    if eps:
        xs = np.array([e["max_x"] for e in eps])
        flags = sum(e["flag_get"] for e in eps)
        lines.append(f"max_x: mean {xs.mean():.0f}, median {np.median(xs):.0f}, max {xs.max()}; flags {flags}")
        levels = sorted({e["level"] for e in eps})
        if len(levels) > 1:
            counts = {lv: sum(e["level"] == lv for e in eps) for lv in levels}
            lines.append("levels: " + ", ".join(f"{lv} {n} episodes" for lv, n in counts.items()))
    lines.append(f"{'tier (max_x)':<14}{'episodes':>10}{'frames':>10}{'share':>9}")
    for row in audit(eps):
        lines.append(f"{row['tier']:<14}{row['episodes']:>10}{row['frames']:>10}{row['share']:>8.1%}")
    return "\n".join(lines + _unreadable_line(index))


def _unreadable_line(index: Index) -> list[str]:
    return [f"{len(index.bad)} unreadable files left out (listed on stderr)"] if index.bad else []


def unreadable_message(corpus: Path, bad: list[dict]) -> str:
    """One line naming a corpus's unreadable files (the first with its error) and the fix."""
    first = bad[0]
    more = f" and {len(bad) - 1} more ({', '.join(b['file'] for b in bad[1:4])}{', ...' if len(bad) > 4 else ''})"
    return (
        f"{len(bad)} unreadable episode file(s) in {corpus}: {first['file']} ({first['error']})"
        f"{more if len(bad) > 1 else ''}; move them out of the folder (an interrupted copy or a damaged disk "
        f"leaves them), then `lemario corpus {corpus} --rebuild`"
    )


def warn_unreadable(corpus: Path, index: Index) -> None:
    """Name a corpus's unreadable files on stderr (readers that can do without them)."""
    if index.bad:
        print(f"warning: {unreadable_message(corpus, index.bad)}", file=sys.stderr)
