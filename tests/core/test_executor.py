"""The executors: a local process pool and Ray on a private 2-CPU instance bound to 127.0.0.1."""

import os
import sys

import pytest

from lemario.core.errors import LemarioError
from lemario.core.executor import run_parallel, torch_threads
from lemario.data.corpus import scan

from conftest import run_cli


def _pid_and_square(x):
    return os.getpid(), x * x


@pytest.mark.parametrize("executor", ["local", "ray"])
def test_run_parallel_runs_elsewhere_and_keeps_order(executor):
    if executor == "ray":  # Ray workers cannot import a test module: ship this function by value
        from lemario.core.executor import ray_init

        ray_init()
        import ray.cloudpickle

        ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    out = run_parallel(_pid_and_square, [1, 2, 3, 4], executor, processes=2, cpus=1)
    assert [sq for _, sq in out] == [1, 4, 9, 16]
    assert os.getpid() not in {pid for pid, _ in out}, "the work ran in other processes"
    if executor == "ray":
        import ray

        assert ray.cluster_resources()["CPU"] == os.cpu_count()
        assert all(n["NodeManagerAddress"] == "127.0.0.1" for n in ray.nodes()), "bound to the loopback interface"
        ray.shutdown()


def test_unknown_executor_is_a_clear_error():
    with pytest.raises(LemarioError, match="unknown executor 'dask'"):
        run_parallel(_pid_and_square, [1], "dask")


def test_torch_threads_restores_the_count():
    import torch

    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def test_flywheel_iteration_on_ray_collects_the_same_corpus(tmp_path):
    runs = {}
    for executor in ("local", "ray"):
        run = tmp_path / executor
        r = run_cli(
            "flywheel",
            "--preset",
            "tiny",
            "--iterations",
            "1",
            "--workers",
            "2",
            "--executor",
            executor,
            "--out",
            str(run),
            timeout=600,
        )
        assert r.returncode == 0, r.stderr[-3000:]
        assert f"({executor}, 2 at a time)" in r.stdout
        runs[executor] = [(e["file"], e["n_steps"], e["max_x"]) for e in scan(run / "corpus").episodes]
        assert (run / "iter001" / "summary.json").exists() and (run / "hof" / "catalog.json").exists()
    assert len(runs["ray"]) == 6 and runs["ray"] == runs["local"], "Ray actors play the same seeded episodes"
