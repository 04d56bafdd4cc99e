"""Where the flywheel's parallel work runs: a local process pool (default) or Ray tasks.

`run_parallel(fn, configs, ...)` runs fn(config) for each config and returns the results in order.
- local: a `ProcessPool` of worker processes (forked from a clean server process, killed with their parent), at most
  `processes` at a time;
- ray: one Ray task each, asking for `cpus` CPUs and, where the cluster has GPUs, one GPU. `ray_address` ""
  starts a private local instance bound to 127.0.0.1; "auto" or "HOST:PORT" joins a running cluster (whose
  nodes must see the run folder at the same path, e.g. a shared filesystem).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import select
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import replace

import torch

from lemario.core.errors import LemarioError

EXECUTORS = ("local", "ray")
# What the fork server imports once, so that a pool starts in a tenth of a second instead of each worker importing
# torch and lemario again (7 s under load; the flywheel starts a pool in most phases): the command's own module
# (`lemario.cli` imports every command), torch, and the emulator's players.
PRELOAD = ["__main__", "torch", "lemario.play.episodes"]


def die_with(pid: int) -> None:
    """This process is killed when process `pid` (the command that started the pool) dies, even by SIGKILL, so no
    orphan plays on. A pool worker's parent is the fork server, which outlives the command while any worker holds its
    pipe: a daemon thread waits on the command's pidfd (Linux ≥ 5.3) and kills this process when it ends."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:  # already gone
        os.kill(os.getpid(), signal.SIGKILL)
    except (AttributeError, OSError):  # not Linux, or an old kernel: the parent's own pool shutdown must do
        return

    def wait() -> None:
        select.select([fd], [], [])  # readable once the process has exited
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=wait, daemon=True, name="die-with-parent").start()


@contextmanager
def torch_threads(n: int):
    """torch's CPU thread count set to n (0: unchanged) for a block, then restored: work run in-process must not
    change the numerics of what the process does next (the thread count changes float reduction order)."""
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def ray_init(address: str = "", cpus: int | None = None) -> None:
    """Start (or join) Ray once per process."""
    if not address:
        # a private instance on the loopback interface, no token: Ray reads these when it is first imported
        # (its defaults bind every interface)
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    try:
        import ray
    except ImportError:
        raise LemarioError("--executor ray needs Ray: pip install ray==2.60.0") from None
    if ray.is_initialized():
        return
    if address:
        ray.init(address=address, log_to_driver=False)
        return
    from ray._private import ray_constants

    if ray_constants.ENABLE_RAY_CLUSTER:
        raise LemarioError(
            "Ray was imported before lemario could keep it on 127.0.0.1: set RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 "
            "in the environment, or pass --ray-address to join a cluster"
        )
    ray.init(num_cpus=cpus or os.cpu_count(), include_dashboard=False, log_to_driver=False)


def ray_gpus() -> int:
    """GPUs in the Ray cluster this process joined."""
    import ray

    return int(ray.cluster_resources().get("GPU", 0))


def forkserver() -> mp.context.ForkServerContext:
    """multiprocessing's fork server context, its preload set (read when the server starts: this process's first
    pool). Its workers are forked from a process that has imported `PRELOAD` and done nothing else: no threads, no
    locks, no emulator, what `spawn` guarantees, without each worker importing torch again."""
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    return ctx


def _init_worker(parent: int, initializer: Callable | None, initargs: tuple) -> None:
    die_with(parent)
    if initializer is not None:
        initializer(*initargs)


class ProcessPool:
    """`processes` worker processes (from the `forkserver`) that die with their parent, running module-level
    functions. A context manager that never hangs on a worker:
    - a worker that dies (killed, out of memory) raises a LemarioError in the parent, not a wait for ever;
    - leaving the block on an exception (Ctrl-C, SIGTERM, an error) stops the workers: SIGTERM, which a training
      answers by stopping at its next step, then SIGKILL for any still running after `grace` seconds. Work is
      written atomically, so either loses nothing already written.
    If the parent is killed outright, its workers kill themselves (`die_with`)."""

    def __init__(self, processes: int, initializer: Callable | None = None, initargs: tuple = (), grace: float = 10):
        self.grace = grace
        self.executor = ProcessPoolExecutor(
            processes, forkserver(), initializer=_init_worker, initargs=(os.getpid(), initializer, initargs)
        )

    def _results(self, futures: list[Future], ordered: bool) -> Iterator:
        try:
            for f in futures if ordered else as_completed(futures):
                yield f.result()
        except BrokenProcessPool:
            raise LemarioError(
                "a worker process died (killed, or out of memory): everything already written is intact; re-run "
                "the command to resume"
            ) from None

    def imap_unordered(self, fn: Callable, items: list) -> Iterator:
        """fn(item) for every item, yielded as each finishes."""
        return self._results([self.executor.submit(fn, x) for x in items], ordered=False)

    def map(self, fn: Callable, items: list) -> list:
        """fn(item) for every item, in order."""
        return list(self._results([self.executor.submit(fn, x) for x in items], ordered=True))

    def close(self, stop: bool = False) -> None:
        """Wait for the workers to finish their work and exit; `stop`: stop them now (SIGTERM, then SIGKILL)."""
        if not stop:
            self.executor.shutdown(wait=True)
            return
        workers = list((self.executor._processes or {}).values())  # Python 3.14's terminate_workers(), by hand
        self.executor.shutdown(wait=False, cancel_futures=True)
        for p in workers:
            p.terminate()
        deadline = time.monotonic() + self.grace
        for p in workers:
            p.join(max(0.0, deadline - time.monotonic()))
            if p.is_alive():
                p.kill()
                p.join()

    def __enter__(self) -> ProcessPool:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        self.close(stop=exc_type is not None)


def run_parallel(
    fn: Callable, args: list, executor: str = "local", processes: int = 2, cpus: int = 1, ray_address: str = ""
) -> list:
    """fn(arg) for each arg, in order: in worker processes (at most `processes` at once) or as Ray tasks."""
    if executor not in EXECUTORS:
        raise LemarioError(f"unknown executor {executor!r}: use one of {', '.join(EXECUTORS)}")
    if not args:
        return []
    if executor == "ray":
        ray_init(ray_address)  # before Ray is first imported: it reads where to listen at import time
        import ray

        task = ray.remote(fn).options(num_cpus=cpus, num_gpus=1 if ray_gpus() else 0, max_retries=0)
        return ray.get([task.remote(a) for a in args])
    if processes <= 1 or len(args) == 1:
        return [fn(a) for a in args]
    with ProcessPool(min(processes, len(args))) as pool:
        return pool.map(fn, args)


def usable_cores() -> int:
    """The cores this process may run on (its affinity: `taskset` and cgroup cpusets count), not the machine's."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def run_configs(fn: Callable, cfgs: list, executor: str = "local", workers: int = 2, ray_address: str = "") -> list:
    """fn(cfg) for each run config (a frozen dataclass with a `threads` field): one alone in this process as it is;
    several `workers` processes at a time (all at once as Ray tasks), this process's usable cores split between them and
    each one's `progress_row`, where it has one, set to its own row."""
    if len(cfgs) <= 1:
        return [fn(c) for c in cfgs]
    procs = min(len(cfgs), max(1, workers)) if executor == "local" else len(cfgs)
    threads = max(1, usable_cores() // procs)
    rows = [{"progress_row": i % procs} if hasattr(c, "progress_row") else {} for i, c in enumerate(cfgs)]
    cfgs = [replace(c, threads=threads, **row) for c, row in zip(cfgs, rows)]
    return run_parallel(fn, cfgs, executor, processes=procs, cpus=threads, ray_address=ray_address)
