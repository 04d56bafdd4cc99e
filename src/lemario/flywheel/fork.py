"""A fork of a flywheel run: a new run folder that starts as iterations 1..N of another and goes on with its own
config (`lemario flywheel --out NEW --fork-from RUN --fork-after N ...`), the way to A/B one change from a given
iteration on against the source's own next iterations.

The fork hard-links (copies across file systems) the source's iteration folders 1..N, the corpus episodes those
iterations collected (runs iter001..iterN and their manifests; the index is rebuilt) and the hall-of-fame entries
of those iterations; nothing of the source is written, and the forked policies name the fork's own world models.
Its config.json, written last, records `forked_from`: the source, N, and every field of the config that differs
from the source's. A kill mid-fork leaves no config.json, so the same command forks again (links already made are
kept). Refused: a source with unfinished iterations before N, a source with frontier exploration forked before
its last iteration (its archive keeps no per-iteration state), or one whose game frames, levels or world model
differ from this config's (the fork warm-starts from the source's models and trains on its corpus). Logs (.jsonl)
are copied, since they are appended in place.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from lemario.core.errors import LemarioError
from lemario.core.files import read_json, write_json
from lemario.core.runconfig import differences, with_defaults
from lemario.data.corpus import INDEX_NAME, scan
from lemario.flywheel import hof
from lemario.flywheel.config import iter_dir
from lemario.flywheel.keys import upgrade_key

_RUN_FILE = re.compile(r"^iter(\d{3})[-.]")  # a collection run's episode (iterNNN-00000.h5) or manifest (iterNNN.json)
MUST_MATCH = ("env", "levels", "train.model")
"""Fields of the run key a fork shares with its source."""


def source_key(run: Path) -> dict:
    """The run key of a flywheel folder (upgraded to today's fields)."""
    try:
        return upgrade_key(read_json(Path(run) / "config.json")["run_key"])
    except (OSError, ValueError, KeyError) as e:
        raise LemarioError(f"--fork-from {run}: not a flywheel run folder ({e.__class__.__name__}): pass RUN") from None


def fork(src: Path, after: int, out: Path, key: dict, defaults: dict) -> dict:
    """Populate `out` with iterations 1..`after` of `src`; returns config.json's `forked_from` record. `key` is the
    fork's own run key, `defaults` the default config's (to compare an older source's key)."""
    src = Path(src)
    theirs = with_defaults(source_key(src), defaults)
    missing = [n for n in range(1, after + 1) if not (iter_dir(src, n) / "summary.json").is_file()]
    if missing:
        raise LemarioError(f"--fork-after {after}: {src} has not finished iteration {missing[0]}: fork after fewer")
    if theirs.get("explore_steps") and iter_dir(src, after + 1).exists():
        raise LemarioError(
            f"--fork-from {src}: its exploration archive is one file, as it stands after its last iteration: fork a "
            f"run with --explore-steps only after that one (--fork-after {after} is not)"
        )
    changed = [d for d in differences(theirs, key) if not d.startswith(("fork_from", "fork_after"))]
    differ = [d for d in changed if d.split(":")[0].startswith(MUST_MATCH)]
    if differ:
        raise LemarioError(f"--fork-from {src}: the fork must share its frames, levels and world model ({differ[0]})")
    for n in range(1, after + 1):
        link_tree(iter_dir(src, n), iter_dir(out, n))
        for sidecar in iter_dir(out, n).glob("policies/*/policy.json"):
            _own_world_model(sidecar, src, out)
    link_tree(src / "corpus", out / "corpus", keep=lambda p: _kept(p, after))
    scan(out / "corpus")
    entries = [e for e in hof.catalog(src) if e["iteration"] <= after]
    for e in entries:
        link_tree(hof.folder(src, e), hof.folder(out, e))
    write_json(out / "hof" / hof.CATALOG, entries)
    return {"run": str(src), "iterations": after, "differs": changed}


def _own_world_model(sidecar: Path, src: Path, out: Path) -> None:
    """A forked policy names the fork's copy of its world model, not the source's (a new file: the link stays the
    source's)."""
    meta = read_json(sidecar)
    wm, source = Path(meta["world_model"]).resolve(), src.resolve()
    if wm.is_relative_to(source):
        write_json(sidecar, {**meta, "world_model": str(out / wm.relative_to(source))})


def _kept(path: Path, after: int) -> bool:
    """A corpus file the fork takes: not the index, not a writer's lock, not a later iteration's run."""
    if path.name in (INDEX_NAME, ".lock") or path.name.endswith(".tmp"):
        return False
    m = _RUN_FILE.match(path.name)
    return m is None or int(m.group(1)) <= after


def link_tree(src: Path, dst: Path, keep=lambda p: p.name != ".lock") -> None:
    """Hard-link every file under src that `keep` takes to the same place under dst (a copy for logs and across file
    systems; files already there are kept). Every other file of a run is written once or replaced whole."""
    for path in sorted(src.rglob("*")):
        if path.is_dir() or not keep(path):
            continue
        target = dst / path.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():
            continue
        if path.suffix == ".jsonl":  # a log appended in place: a link would share the appends
            shutil.copy2(path, target)
            continue
        try:
            os.link(path, target)
        except OSError:
            shutil.copy2(path, target)
