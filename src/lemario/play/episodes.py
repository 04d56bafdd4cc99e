"""One episode loop (`play`; `play_episode` records it as a corpus episode) and the pool of workers that plays many
(`imap`): collection, evaluation and rendering all play through them.

A worker holds a `Player`: one env and the agents it has built, by spec, on first use. `imap(fn, tasks, ...)`
calls fn(player, *task) for every task and yields the results as they finish, in this process (one worker), in
worker processes that die with their parent, or in Ray actors; `Workers` keeps such a pool across many calls.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from lemario.control.agents import make_agent
from lemario.control.planner import PlannerConfig
from lemario.core.errors import LemarioError
from lemario.core.executor import ProcessPool, ray_init, torch_threads
from lemario.data.corpus import Episode
from lemario.games.mario import ram as R
from lemario.games.mario.env import RAM_FRAME, EnvConfig, MarioState, SuperMarioBros
from lemario.games.mario.ram import LABELS, label_table
from lemario.games.mario.rewards import episode_rewards
from lemario.model.world_model import load_world_model

OnStep = Callable[[np.ndarray, int | None, dict], None]
"""on_step(obs, action, info): after the reset (action None) and after every step; the env holds the new frame."""


def end_of(info: dict, ram: np.ndarray, truncated: bool) -> str:
    """How an episode ended: flag, step_limit, pit, time, enemy (or none)."""
    if info["flag_get"]:
        return "flag"
    if truncated:
        return "step_limit"
    if info["is_dying"]:
        if ram[R.Y_VIEWPORT] > 1:
            return "pit"
        return "time" if info["time"] == 0 else "enemy"
    return "none"


def play(env: SuperMarioBros, agent, seed: int, on_step: OnStep | None = None, start: MarioState | None = None) -> dict:
    """One episode from the level start (or from a saved `start`, as exploration restores one) with the env and
    agent seeded by `seed`; returns its row (max_x, final x, flag, steps, how it ended, return, and how many steps
    took each action: what a controller chose, beside what its world model saw in its corpus)."""
    obs, info = env.reset(seed=seed, options={"state": start} if start is not None else None)
    agent.reset(seed)
    if on_step:
        on_step(obs, None, info)
    max_x, ret, term, trunc = info["x_pos"], 0.0, False, False
    actions = [0] * env.action_space.n  # steps per action index
    while not (term or trunc):
        action = agent.act(obs, info)
        obs, r, term, trunc, info = env.step(action)
        actions[action] += 1
        ret += r
        max_x = max(max_x, info["x_pos"])
        if on_step:
            on_step(obs, action, info)
    return {
        "eval_seed": seed,
        "max_x": int(max_x),
        "final_x": int(info["x_pos"]),
        "flag_get": int(info["flag_get"]),
        "steps": int(info["steps"]),
        "end": end_of(info, env.ram, trunc),
        "end_x": int(info["x_pos"]),
        "return": float(ret),
        "actions": actions,
    }


def play_episode(
    env: SuperMarioBros, agent, seed: int, name: str | None = None, start: MarioState | None = None, on_step=None
) -> Episode:
    """One episode from the level start (or a saved `start`); returns it with labels and rewards computed from its
    RAM. agent: a `lemario.control.agents` agent (recorded as `name`) or the spec string of one; `on_step` also sees
    every step (`lemario.play.episodes.OnStep`)."""
    if isinstance(agent, str):
        name, agent = agent, make_agent(agent, env.config)
    frames, rams, actions = [], [], []

    def record(obs: np.ndarray, action: int | None, info: dict) -> None:
        frames.append(env.last_frame)
        rams.append(env.ram)
        if action is not None:
            actions.append(action)
        if on_step is not None:
            on_step(obs, action, info)

    row = play(env, agent, seed, record, start)
    stats = agent.episode_stats() if hasattr(agent, "episode_stats") else {}
    ram = np.stack(rams)  # (T+1, 2048)
    labels = label_table(ram)  # (T+1, L)
    x = labels[:, LABELS.index("x_pos")]
    dying = np.flatnonzero(labels[:, LABELS.index("is_dying")])
    truncated = row["end"] == "step_limit"
    meta = {
        "seed": seed,
        "policy": name or type(agent).__name__,
        "n_steps": len(actions),
        "max_x": int(x.max()),
        "flag_get": int(labels[:, LABELS.index("flag_get")].max()),
        "terminated": int(not truncated),
        "truncated": int(truncated),
        "death_x": int(x[dying[0]]) if len(dying) else -1,
        "explored_steps": int(stats.get("explored_steps", 0)),
        "ram_frame": RAM_FRAME,
        **_env_meta(env.config),
    }
    return Episode(np.stack(frames), np.array(actions, np.uint8), ram, labels, episode_rewards(labels), meta)


def _env_meta(cfg: EnvConfig) -> dict:
    d = asdict(cfg)
    d.pop("rom")
    return d


class Player:
    """An env and the agents that play in it (built on first use, then reset per episode)."""

    def __init__(self, env_config: EnvConfig, planner: PlannerConfig | None = None):
        self.env, self.planner, self.agents, self.models = SuperMarioBros(env_config), planner, {}, {}

    def agent(self, spec: str, explore: float = 0.0, explore_x: tuple[int, ...] = ()):
        key = spec, explore, explore_x
        if key not in self.agents:
            self.agents[key] = make_agent(spec, self.env.config, self.planner, explore, explore_x)
        return self.agents[key]

    def world_model(self, path: Path):
        """A world model (eval mode), loaded once per worker."""
        if path not in self.models:
            self.models[path] = load_world_model(path)[0]
        return self.models[path]

    def close(self) -> None:
        self.env.close()


_player: Player | None = None  # the worker process's own
_init_error = ""


def _init_worker(env_config: EnvConfig, planner: PlannerConfig | None) -> None:
    global _player, _init_error
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a file-size limit is an OSError, like a full disk
    torch.set_num_threads(1)  # model agents: one worker per core
    try:
        _player = Player(env_config, planner)
    except Exception as e:  # noqa: BLE001 - raised by the first task: a failing initializer only says "broken"
        _init_error = f"a worker could not start its env: {e}"


def _call(task: tuple[Callable, tuple]):
    if _init_error:
        raise LemarioError(_init_error)
    fn, args = task
    return fn(_player, *args)


class _RayPlayer:
    """A Ray actor holding a Player."""

    def __init__(self, env_config: EnvConfig, planner: PlannerConfig | None):
        torch.set_num_threads(1)
        self.player = Player(env_config, planner)

    def call(self, fn: Callable, args: tuple):
        return fn(self.player, *args)


class Workers:
    """A pool of players kept across many `imap` calls (exploration plays one round of tasks at a time): one
    `Player` in this process, a `ProcessPool` of worker processes, or Ray actors. A context manager."""

    def __init__(
        self,
        env_config: EnvConfig,
        planner: PlannerConfig | None = None,
        workers: int = 1,
        executor: str = "local",
        ray_address: str = "",
    ):
        self.player = self.pool = self.actors = None
        if executor == "ray":
            ray_init(ray_address)  # before Ray is first imported: it reads where to listen at import time
            import ray

            actor = ray.remote(num_cpus=1)(_RayPlayer)
            self.actors = [actor.remote(env_config, planner) for _ in range(workers)]
        elif workers == 1:
            self.player = Player(env_config, planner)
        else:
            self.pool = ProcessPool(workers, _init_worker, (env_config, planner))

    def imap(self, fn: Callable, tasks: list[tuple]) -> Iterator:
        """fn(player, *task) for every task, yielded as each finishes. Worker processes and Ray actors start on the
        tasks at this call (the caller may do other work before it reads the results); the player in this process
        plays each as it is read."""
        if self.player is not None:
            return self._play_here(fn, tasks)
        if self.pool is not None:
            return self.pool.imap_unordered(_call, [(fn, t) for t in tasks])
        from ray.util import ActorPool

        pool = ActorPool(self.actors)
        for t in tasks:
            pool.submit(lambda a, t: a.call.remote(fn, t), t)
        return (pool.get_next_unordered() for _ in tasks)

    def _play_here(self, fn: Callable, tasks: list[tuple]) -> Iterator:
        with torch_threads(1):  # as in a worker process: the same numerics whichever way a task is played
            for t in tasks:
                yield fn(self.player, *t)

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if self.player is not None:
            self.player.close()
        if self.pool is not None:
            self.pool.close(stop=True)  # the players hold nothing to save: stopped, not waited for
        if self.actors is not None:
            import ray

            for a in self.actors:
                ray.kill(a)


def imap(
    fn: Callable,
    tasks: list[tuple],
    env_config: EnvConfig,
    planner: PlannerConfig | None = None,
    workers: int = 1,
    executor: str = "local",
    ray_address: str = "",
) -> Iterator:
    """fn(player, *task) for every task, yielded as each finishes (module-level fn: it travels to the workers), by
    `min(workers, tasks)` workers that live as long as the iteration."""
    if not tasks:
        return
    with Workers(env_config, planner, min(workers, len(tasks)), executor, ray_address) as pool:
        yield from pool.imap(fn, tasks)
