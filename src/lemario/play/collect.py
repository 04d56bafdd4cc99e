"""Parallel episode collection into a corpus folder: `lemario collect`.

A collection is a *run* (`DIR/runs/<run>.json` holds its resolved config, seed and commit). Episode i of a run
is played with seed SeedSequence([seed, run number, i]) and saved as `DIR/<run>-<i>.h5`, so a run is fully
determined by its config. Re-running the same command resumes the newest unfinished run with that config
(after a crash or kill it plays exactly the missing episodes); once a run is complete, the same command starts
a new run and adds episodes. A run given a name (`--run NAME`, as the flywheel does per iteration) is played
once: re-running resumes it until complete, then does nothing. Nothing is ever overwritten, and one process at a
time writes to a folder.

The player is any evaluation agent (`lemario.control.agents`): `biased`, `uniform`, `policy:PATH`, `planner:PATH`, with
`--explore EPS` mixing in biased-random macros. A macro lasts 6.5 steps on average, so EPS of 0.1 already hands ~40%
of the steps to biased play (0.4: ~80%); `--on-policy SHARE` plays that share of the episodes with no macros, so a
corpus holds the agent's own trajectories (how far it really gets, flags included) beside the perturbed ones, and
`--on-policy-agents SPEC ...` has other agents play them in turn. `--explore-x` keeps the macros to windows of
Mario's x, and `--explore-at-ends N` finds the windows itself: the on-policy episodes play first, and each explored
episode explores before one of the N places where they ended most often. Each episode records its `policy`,
`explore`, `explore_x` and `explored_steps`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import tyro
from tqdm import tqdm

from lemario.control.agents import validate_spec
from lemario.control.exploring import end_windows, x_windows
from lemario.core.errors import LemarioError
from lemario.core.files import SPACE_ERRNOS, check_writable, now_iso, read_json, write_json, writer_lock
from lemario.core.progress import progress_bar
from lemario.core.provenance import provenance
from lemario.core.runconfig import differences, run_key, with_defaults
from lemario.data.corpus import (
    Index,
    add_to_index,
    format_summary,
    index_row,
    read_meta,
    scan,
    warn_unreadable,
    write_episode,
)
from lemario.games.mario.emulator import parse_level, resolve_rom
from lemario.games.mario.env import EnvConfig
from lemario.games.mario.rewards import REWARD_SPEC_VERSION
from lemario.model.train import CPU_MODEL
from lemario.play.episodes import Player, Workers, play_episode


@dataclass(frozen=True)
class CollectConfig:
    out: Path = Path("runs/corpus-1-1")
    """Corpus folder (created if missing; episodes are added, never overwritten)."""
    episodes: int = 20
    """Episodes to collect in this run."""
    workers: int = 2
    """Worker processes, one emulator each (1 plays in this process)."""
    policy: str = "biased"
    """Agent spec: 'biased' (right-biased random with held jumps), 'covering' (biased, with some macros holding any
    action: a corpus in which every action was taken), 'uniform', 'policy:PATH' or 'planner:PATH'."""
    explore: float = 0.0
    """Per-step probability of a biased-random macro overriding the agent (exploration)."""
    explore_x: tuple[int, ...] = ()
    """Windows of Mario's x where the explored episodes' macros may start, as pairs X0 X1 (`--explore-x 1400 2050
    2300 2480`: the agent's own play everywhere else, other actions before the obstacles where it dies); empty:
    everywhere."""
    explore_at_ends: int = 0
    """Explore only before the N places where this run's on-policy episodes ended most often (a death, or the step
    limit; `lemario.control.exploring.end_windows`), one window per explored episode in turn: the on-policy
    episodes play first, then the explored ones (0: --explore-x or everywhere). Needs --on-policy SHARE > 0."""
    on_policy: float = 0.0
    """Share of the run's episodes played with no exploration (the agent alone), spread evenly over the episode
    indices; the others explore with --explore."""
    on_policy_agents: tuple[str, ...] = ()
    """Agent specs that play the on-policy episodes in turn instead of --policy (the flywheel's previous iteration's
    policies); the explored episodes stay --policy's."""
    run: str = ""
    """Run name (default: the next run-NNNN). A named run is played once: re-running resumes it, never repeats it."""
    seed: int = 0
    """Base seed of the run; episode seeds derive from it, the run number and the episode index."""
    env: tyro.conf.OmitArgPrefixes[EnvConfig] = field(default_factory=EnvConfig)
    """The game (`lemario.games.mario.env.EnvConfig`): --level, --backend, --action-set, --max-steps, ..."""
    levels: tuple[str, ...] = ()
    """Collect on each of these levels instead of --level: `--episodes` each, into OUT/<level>/ (one sub-corpus
    per level, so OUT is one multi-level corpus); the list is kept in OUT/levels.json and a folder refuses another."""
    progress: bool = True
    """Show the live progress bar."""
    executor: str = "local"
    """'local' (worker processes) or 'ray' (one Ray actor per worker; the corpus folder must be shared)."""
    ray_address: str = ""
    """Ray cluster to join ('auto' or HOST:PORT); empty: a private local instance on 127.0.0.1."""

    def validate(self) -> None:
        self.env.validate()
        resolve_rom(self.env.rom, self.env.backend)
        for spec in (self.policy, *self.on_policy_agents):
            validate_spec(spec, self.env)
        if self.on_policy_agents and not self.on_policy:
            raise LemarioError("--on-policy-agents play the on-policy episodes: pass --on-policy SHARE > 0 too")
        if not 0 <= self.explore <= 1:
            raise LemarioError(f"--explore {self.explore} is not a probability: pass a value in [0, 1]")
        x_windows(self.explore_x)
        if (self.explore_x or self.explore_at_ends) and not self.explore:
            raise LemarioError("--explore-x and --explore-at-ends say where to explore: pass --explore RATE > 0 too")
        if self.explore_at_ends < 0 or (self.explore_at_ends and self.explore_x):
            raise LemarioError(
                f"--explore-at-ends {self.explore_at_ends}: give a count of places >= 0, without --explore-x"
            )
        if self.explore_at_ends and not self.on_policy:
            raise LemarioError("--explore-at-ends explores where the on-policy episodes end: pass --on-policy > 0")
        if not 0 <= self.on_policy <= 1:
            raise LemarioError(f"--on-policy {self.on_policy} is not a share of episodes: pass a value in [0, 1]")
        if self.run and (
            not self.run.replace("-", "").replace("_", "").isalnum() or self.run.startswith(("-", "run-"))
        ):
            raise LemarioError(
                f"run name {self.run!r}: use letters, digits, '-' or '_', not starting with 'run-' (kept for "
                "numbered runs)"
            )
        if self.executor not in ("local", "ray"):
            raise LemarioError(f"unknown executor {self.executor!r}: use local or ray")
        if self.episodes < 1 or self.workers < 1:
            raise LemarioError("--episodes and --workers must be at least 1")
        self.env.validate_levels(self.levels)

    def per_level(self) -> list[CollectConfig]:
        """One collection per level into OUT/<level>/, each seeded from (seed, world, stage); [self] without
        --levels."""
        if not self.levels:
            return [self]
        return [
            replace(
                self,
                out=self.out / level,
                env=replace(self.env, level=level),
                levels=(),
                seed=level_seed(self.seed, level),
            )
            for level in self.levels
        ]


BOOKKEEPING = ("out", "workers", "progress", "executor", "ray_address")
"""CollectConfig fields that do not change a run's episodes (where they go, how fast)."""
PRESETS = {
    "tiny": CollectConfig(out=Path("runs/corpus-tiny"), episodes=2, workers=1, env=EnvConfig(max_steps=60)),
    "cpu": CollectConfig(env=CPU_MODEL.frames_env()),  # the frames of the `cpu` world model (`lemario train`)
    "gpu": CollectConfig(episodes=2000, workers=16),
}


def level_seed(seed: int, level: str) -> int:
    """The base seed of a multi-level run's `level`: SeedSequence([seed, world, stage])."""
    return int(np.random.SeedSequence([seed, *parse_level(level)]).generate_state(1)[0])


def episode_agent(cfg: CollectConfig, index: int) -> tuple[str, float]:
    """Episode `index`'s agent spec and exploration. The on-policy share of the indices is spread evenly (episode i
    is on-policy when floor((i + 1) x share) passes floor(i x share)) and played with no exploration, by
    --on-policy-agents in turn where given (the j-th on-policy episode, j = floor(i x share), by agent j mod their
    number); the others by --policy with --explore."""
    if int((index + 1) * cfg.on_policy) == int(index * cfg.on_policy):
        return cfg.policy, cfg.explore
    agents = cfg.on_policy_agents or (cfg.policy,)
    return agents[int(index * cfg.on_policy) % len(agents)], 0.0


def episode_seed(seed: int, run_number: int, index: int) -> int:
    """Seed of episode `index` of run `run_number`: SeedSequence([seed, run, index]), disjoint from eval seeds."""
    return int(np.random.SeedSequence([seed, run_number, index]).generate_state(1)[0])


def _play_and_write(
    player: Player,
    file: str,
    run_index: int,
    seed: int,
    policy: str,
    explore: float,
    explore_x: tuple[int, ...],
    out: Path,
    meta: dict,
) -> dict:
    """A worker's task: play one episode and write it as OUT/file; returns its index row."""
    t0 = time.perf_counter()
    ep = play_episode(player.env, player.agent(policy, explore, explore_x), seed, policy)
    ep.meta.update(
        meta, explore=explore, explore_x=list(explore_x) if explore else [], run_index=run_index, created=now_iso()
    )
    try:
        write_episode(out / file, ep)
    except OSError as e:
        if e.errno in SPACE_ERRNOS:
            msg = f"out of disk space writing {out / file} ({e.strerror}): free space or use another --out"
            raise LemarioError(msg) from None
        raise
    return {"row": index_row(out / file, ep.meta, ep.n_steps), "seconds": time.perf_counter() - t0}


# ---- runs -------------------------------------------------------------------------------------------------------
def _plan_run(cfg: CollectConfig) -> tuple[str, int, list[int]]:
    """(run id, run number, episode indices still to play): resume the newest unfinished identical run, or start one."""
    runs_dir = cfg.out / "runs"
    runs_dir.mkdir(exist_ok=True)
    manifests = sorted(runs_dir.glob("*.json"))
    key, defaults = run_key(cfg, BOOKKEEPING), run_key(CollectConfig(), BOOKKEEPING)
    if cfg.run and (runs_dir / f"{cfg.run}.json").exists():
        m = read_json(runs_dir / f"{cfg.run}.json")
        if diff := differences(with_defaults(m["key"], defaults), key):
            raise LemarioError(
                f"run {cfg.run} of {cfg.out} was started with another config ({'; '.join(diff)}): "
                "give the new one another --run name"
            )
        done = {int(p.stem.rsplit("-", 1)[1]) for p in cfg.out.glob(f"{cfg.run}-*.h5")}
        return cfg.run, m["number"], [i for i in range(cfg.episodes) if i not in done]
    for path in [] if cfg.run else reversed([m for m in manifests if m.stem.startswith("run-")]):
        m = read_json(path)
        if with_defaults(m["key"], defaults) == key:
            done = {int(p.stem.rsplit("-", 1)[1]) for p in cfg.out.glob(f"{m['run']}-*.h5")}
            todo = [i for i in range(m["key"]["episodes"]) if i not in done]
            if todo:
                return m["run"], m["number"], todo
            break
    number = len(manifests) + 1
    run = cfg.run or f"run-{number:04d}"
    manifest = {
        "run": run,
        "number": number,
        "key": key,
        "created": now_iso(),
        "reward_spec_version": REWARD_SPEC_VERSION,
        **provenance(),
    }
    write_json(runs_dir / f"{run}.json", manifest)
    return run, number, list(range(cfg.episodes))


def collect(cfg: CollectConfig) -> Index:
    """Run (or resume) a collection (one per level with --levels); returns the corpus index afterwards."""
    cfg.validate()
    check_writable(cfg.out)
    if cfg.levels:
        check_levels(cfg.out, cfg.levels)
        for one in cfg.per_level():
            print(f"level {one.env.level} into {one.out}")
            collect(one)
        return scan(cfg.out)
    with writer_lock(cfg.out):
        run, number, todo = _plan_run(cfg)
        done = cfg.episodes - len(todo)
        if done and not todo:
            print(f"run {run} is complete ({done} episodes)")
        elif done:
            print(f"resuming {run}: {done}/{cfg.episodes} episodes already written")
        bar = progress_bar(total=cfg.episodes, initial=done, unit="ep", progress=cfg.progress)
        try:
            if todo:
                _play_run(cfg, run, number, todo, bar)
        except LemarioError as e:
            written = len(list(cfg.out.glob("*.h5")))
            raise LemarioError(f"{e}; the {written} episodes already written are intact") from None
        finally:
            bar.close()
    return scan(cfg.out)


def _play_run(cfg: CollectConfig, run: str, number: int, todo: list[int], bar: tqdm) -> None:
    """Play and write the run's episodes `todo`; with --explore-at-ends the on-policy ones first, then the explored
    ones, each in a window before a place where those ended."""
    extra, progress = {"run": run, **provenance()}, {"steps": 0, "best": 0, "t0": time.perf_counter()}
    phases = [todo]
    if cfg.explore_at_ends:
        phases = [[i for i in todo if not episode_agent(cfg, i)[1]], [i for i in todo if episode_agent(cfg, i)[1]]]
    with Workers(cfg.env, None, min(cfg.workers, len(todo)), cfg.executor, cfg.ray_address) as pool:
        windows = ()
        for k, indices in enumerate(phases):
            if k:
                windows = run_end_windows(cfg, run)
            tasks = [
                (
                    f"{run}-{i:05d}.h5",
                    i,
                    episode_seed(cfg.seed, number, i),
                    *episode_agent(cfg, i),
                    episode_windows(cfg, i, windows),
                    cfg.out,
                    extra,
                )
                for i in indices
            ]
            _write_results(cfg, pool.imap(_play_and_write, tasks), bar, progress)


def _write_results(cfg: CollectConfig, results, bar: tqdm, progress: dict) -> None:
    """Index the written episodes as they come (every 10 s, and at the end, also after an error)."""
    rows, saved = [], time.perf_counter()
    try:
        for result in results:
            row = result["row"]
            rows.append(row)
            if time.perf_counter() - saved > 10:
                add_to_index(cfg.out, rows)
                rows, saved = [], time.perf_counter()
            progress["steps"] += row["n_steps"] + 1
            progress["best"] = max(progress["best"], row["max_x"])
            rate = progress["steps"] / (time.perf_counter() - progress["t0"])
            bar.set_postfix({"frames/s": f"{rate:.0f}", "best_x": progress["best"]}, refresh=False)
            bar.update(1)
    finally:
        add_to_index(cfg.out, rows)


def episode_windows(cfg: CollectConfig, index: int, windows: tuple[int, ...]) -> tuple[int, ...]:
    """Episode `index`'s --explore-x windows: --explore-x's; with --explore-at-ends one of `windows` (flat pairs),
    the j-th explored episode's the (j mod their number)-th (none for the on-policy episodes, or without ends)."""
    if not cfg.explore_at_ends:
        return cfg.explore_x
    if not windows or not episode_agent(cfg, index)[1]:
        return ()
    j = index - int(index * cfg.on_policy)  # explored episodes before this one
    k = j % (len(windows) // 2)
    return windows[2 * k : 2 * k + 2]


def run_end_windows(cfg: CollectConfig, run: str) -> tuple[int, ...]:
    """The windows before the places where the run's on-policy episodes (all written) ended most often."""
    ends = []
    for i in range(cfg.episodes):
        if not episode_agent(cfg, i)[1]:
            meta = read_meta(cfg.out / f"{run}-{i:05d}.h5")
            if not meta["flag_get"]:
                ends.append(meta["death_x"] if meta["death_x"] >= 0 else meta["max_x"])
    windows = end_windows(ends, cfg.explore_at_ends)
    pairs = ", ".join(f"{a}-{b}" for a, b in x_windows(windows)) or "none (every episode reached the flag)"
    print(f"{run}: {len(ends)} on-policy episodes ended short of the flag; explored windows {pairs}")
    return windows


def check_levels(out: Path, levels: tuple[str, ...]) -> None:
    """Record a multi-level folder's levels (OUT/levels.json, under the folder's writer lock), or refuse a folder
    that holds another list."""
    check_writable(out)
    path = out / "levels.json"
    with writer_lock(out):
        if not path.exists():
            write_json(path, {"levels": list(levels)})
            return
        held = tuple(read_json(path)["levels"])
    if held != levels:
        raise LemarioError(
            f"{out} holds the levels {' '.join(held)}: pass --levels {' '.join(held)}, or use another --out"
        )


def collect_main(cfg: CollectConfig) -> None:
    index = collect(cfg)
    print(format_summary(index, title=str(cfg.out)))
    warn_unreadable(cfg.out, index)
