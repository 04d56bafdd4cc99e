"""How often a corpus's episodes press each direction, and what the game paid for it (per level).

    python scripts/action_coverage.py runs/corpus-levels6-r112np

A world model learns what an action does only from the steps that took it: a direction the collector rarely
holds, or holds only inside a run the other way (momentum), is predicted from those few steps, and a policy can
find the error. Prints, per sub-corpus (a level of a multi-level corpus; '.' for the folder's own episodes):
the share of steps whose action holds left / right / neither, the mean x change (px) on those steps, and the
actions no step took (what a controller may choose but the world model never saw).

    python scripts/action_coverage.py runs/corpus-shown-1500-r112np --record pretrained/1-1/world_model.safetensors

--record writes the corpus's steps per action into the sidecar of a world model trained on the whole of it before
training recorded them (`lemario.model.world_model.known_actions`: its controllers then choose only actions it saw).
"""

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import h5py
import numpy as np

from lemario.core import checkpoint
from lemario.core.files import write_json
from lemario.games.mario.actions import ACTION_SETS
from lemario.games.mario.ram import LABELS


def fail(message: str):
    print(f"action_coverage: {message}", file=sys.stderr)
    raise SystemExit(2)


def episode_files(corpus: Path) -> list[Path]:
    files = sorted(corpus.rglob("*.h5"))
    if not files:
        fail(f"{corpus} holds no episodes (*.h5): pass a corpus folder")
    return files


def coverage(corpus: Path, action_set: str = "complex") -> dict[str, dict]:
    """{level: {direction: (share of steps, mean x change on them), 'never': [actions no step took]}}; a flat
    corpus is one level, '.'."""
    names = ACTION_SETS[action_set]
    direction = np.array(["left" if "left" in n else "right" if "right" in n else "neither" for n in names])
    files = episode_files(corpus)
    steps: dict[str, list[tuple[np.ndarray, np.ndarray]]] = defaultdict(list)
    for f in files:
        with h5py.File(f, "r") as h:
            x = h["labels"][:, LABELS.index("x_pos")].astype(np.int64)  # (T+1,)
            steps[str(f.parent.relative_to(corpus).parts[0]) if f.parent != corpus else "."].append(
                (h["actions"][:], np.diff(x))
            )
    out = {}
    for level, eps in sorted(steps.items()):
        actions = np.concatenate([a for a, _ in eps])
        dirs, dx = direction[actions], np.concatenate([v for _, v in eps])
        out[level] = {
            d: (float((dirs == d).mean()), float(dx[dirs == d].mean()) if (dirs == d).any() else float("nan"))
            for d in ("left", "right", "neither")
        }
        out[level]["never"] = ["+".join(names[i]) or "NOOP" for i in sorted(set(range(len(names))) - set(actions))]
    return out


def record(model: Path, corpus: Path) -> list[int]:
    """Write the corpus's steps per action into the world model's sidecar as training does (`action_counts`), after
    checking the model was trained on the whole of this corpus; returns the counts."""
    meta = checkpoint.load_meta(model, kind="world_model")
    train = meta.get("train_config", {})
    if Path(meta.get("corpus", "")).resolve() != corpus.resolve():
        fail(f"{model} was trained on {meta.get('corpus')}, not {corpus}: pass the corpus its sidecar names")
    if train.get("episodes") or train.get("max_episodes"):
        fail(
            f"{model} was trained on a selection of {corpus}'s episodes: its counts cannot be recovered from the folder"
        )
    counts = np.zeros(meta["config"]["n_actions"], dtype=np.int64)
    for f in episode_files(corpus):
        with h5py.File(f, "r") as h:
            counts += np.bincount(h["actions"][:], minlength=len(counts))
    if meta.get("action_counts") not in (None, counts.tolist()):
        fail(f"{model} already records other action counts ({meta['action_counts']}): it was trained on other episodes")
    write_json(
        checkpoint.sidecar_path(Path(model).with_suffix(".safetensors")), {**meta, "action_counts": counts.tolist()}
    )
    return counts.tolist()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("corpus", type=Path)
    ap.add_argument("--action-set", default="complex", choices=sorted(ACTION_SETS))
    ap.add_argument("--record", type=Path, metavar="MODEL", help="write the steps per action into MODEL's sidecar")
    args = ap.parse_args()
    if args.record:
        print(f"recorded steps per action in {args.record}: {record(args.record, args.corpus)}")
    print(f"{'part':8} {'left share':>10} {'dx|left':>8} {'right share':>11} {'dx|right':>9} {'neither':>8} {'dx':>6}")
    for level, c in coverage(args.corpus, args.action_set).items():
        (ls, ldx), (rs, rdx), (ns, ndx) = c["left"], c["right"], c["neither"]
        print(
            f"{level:8} {ls:10.1%} {ldx:8.2f} {rs:11.1%} {rdx:9.2f} {ns:8.1%} {ndx:6.2f}  never: {' '.join(c['never'])}"
        )


if __name__ == "__main__":
    main()
