"""How often a corpus's episodes press each direction, and what the game paid for it (per level).

    python scripts/action_coverage.py runs/corpus-levels6-r112np

A world model learns what an action does only from the steps that took it: a direction the collector rarely
holds, or holds only inside a run the other way (momentum), is predicted from those few steps, and a policy can
find the error. Prints, per sub-corpus (a level of a multi-level corpus; '.' for the folder's own episodes):
the share of steps whose action holds left / right / neither, the mean x change (px) on those steps, and the
actions no step took (what a controller may choose but the world model never saw).
"""

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import h5py
import numpy as np

from lemario.games.mario.actions import ACTION_SETS
from lemario.games.mario.ram import LABELS


def coverage(corpus: Path, action_set: str = "complex") -> dict[str, dict]:
    """{level: {direction: (share of steps, mean x change on them), 'never': [actions no step took]}}; a flat
    corpus is one level, '.'."""
    names = ACTION_SETS[action_set]
    direction = np.array(["left" if "left" in n else "right" if "right" in n else "neither" for n in names])
    files = sorted(corpus.rglob("*.h5"))
    if not files:
        print(f"action_coverage: {corpus} holds no episodes (*.h5): pass a corpus folder", file=sys.stderr)
        raise SystemExit(2)
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("corpus", type=Path)
    ap.add_argument("--action-set", default="complex", choices=sorted(ACTION_SETS))
    args = ap.parse_args()
    print(f"{'part':8} {'left share':>10} {'dx|left':>8} {'right share':>11} {'dx|right':>9} {'neither':>8} {'dx':>6}")
    for level, c in coverage(args.corpus, args.action_set).items():
        (ls, ldx), (rs, rdx), (ns, ndx) = c["left"], c["right"], c["neither"]
        print(
            f"{level:8} {ls:10.1%} {ldx:8.2f} {rs:11.1%} {rdx:9.2f} {ns:8.1%} {ndx:6.2f}  never: {' '.join(c['never'])}"
        )


if __name__ == "__main__":
    main()
