"""The executors: a local process pool and Ray on a private 2-CPU instance bound to 127.0.0.1."""

import json
import os
import subprocess
import sys

import pytest

from lemario.core.errors import LemarioError
from lemario.core.executor import run_parallel, torch_threads
from lemario.data.corpus import scan

from conftest import run_cli_many


def _pid_and_square(x):
    return os.getpid(), x * x


def test_run_parallel_runs_elsewhere_and_keeps_order():
    out = run_parallel(_pid_and_square, [1, 2, 3, 4], "local", processes=2, cpus=1)
    assert [sq for _, sq in out] == [1, 4, 9, 16]
    assert os.getpid() not in {pid for pid, _ in out}, "the work ran in other processes"


RAY_CHECK = """
import json, os, socket
from lemario.core.executor import run_parallel

def pid_and_square(x):
    return os.getpid(), x * x

out = run_parallel(pid_and_square, [1, 2, 3, 4], "ray", processes=2, cpus=1)  # lemario imports Ray itself
import ray
session = ray._private.worker._global_node.get_session_dir_path()
pids, parents = {os.getpid()}, {}
for d in filter(str.isdigit, os.listdir("/proc")):
    try:
        cmd, stat = open(f"/proc/{d}/cmdline").read(), open(f"/proc/{d}/stat").read()
    except OSError:
        continue
    parents.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(d))
    if session in cmd:  # Ray's daemons, started outside this process tree
        pids.add(int(d))
todo = list(pids)
while todo:  # and every process below this one
    for child in parents.get(todo.pop(), []):
        if child not in pids:
            pids.add(child)
            todo.append(child)
inodes = set()
for pid in pids:
    try:
        links = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
    except OSError:
        continue
    inodes |= {link[8:-1] for link in links if link.startswith("socket:[")}
listening = []
for table, family in (("/proc/net/tcp", socket.AF_INET), ("/proc/net/tcp6", socket.AF_INET6)):
    for row in open(table).read().splitlines()[1:]:
        f = row.split()
        if f[3] == "0A" and f[9] in inodes:  # LISTEN
            raw = bytes.fromhex(f[1].split(":")[0])
            raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))  # /proc's words are little-endian
            listening.append(socket.inet_ntop(family, raw))
print(json.dumps({"out": out, "me": os.getpid(), "cpus": ray.cluster_resources()["CPU"],
                  "nodes": [n["NodeManagerAddress"] for n in ray.nodes()], "listening": listening}))
ray.shutdown()
"""


def test_ray_from_a_fresh_process_runs_the_work_and_listens_on_loopback_only():
    """In a clean process (no RAY_* variable inherited): results in order from other processes, a private instance
    with this machine's CPUs, and every socket Ray's processes listen on bound to the loopback interface."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    r = subprocess.run([sys.executable, "-c", RAY_CHECK], capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert [sq for _, sq in got["out"]] == [1, 4, 9, 16] and got["me"] not in {pid for pid, _ in got["out"]}
    assert got["cpus"] == os.cpu_count() and got["nodes"] == ["127.0.0.1"]
    assert len(got["listening"]) >= 3, "Ray's servers were found (the check is not vacuous)"
    assert set(got["listening"]) <= {"127.0.0.1", "::ffff:127.0.0.1", "::1"}, got["listening"]


def test_unknown_executor_is_a_clear_error():
    with pytest.raises(LemarioError, match="unknown executor 'dask'"):
        run_parallel(_pid_and_square, [1], "dask")


def test_torch_threads_restores_the_count():
    import torch

    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def test_lemario_shortens_openmps_spinning_before_torch_loads_unless_told_otherwise():
    """`import lemario` (the first thing any lemario module runs) sets GOMP_SPINCOUNT=3000 in a process that sets
    neither OpenMP waiting variable, before torch is loaded (read once, as torch loads libgomp); children inherit it;
    either variable already set leaves both as they are."""
    probe = "import os, sys, lemario; print(os.environ.get('GOMP_SPINCOUNT'), 'torch' in sys.modules)"
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}

    def spins(**extra) -> list[str]:
        run = subprocess.run([sys.executable, "-c", probe], env=env | extra, capture_output=True, text=True, check=True)
        return run.stdout.split()

    assert spins() == ["3000", "False"], "set before torch is loaded"
    assert spins(OMP_WAIT_POLICY="PASSIVE") == ["None", "False"]
    assert spins(GOMP_SPINCOUNT="INFINITE")[0] == "INFINITE"


def test_flywheel_iteration_on_ray_collects_the_same_corpus(tmp_path):
    """The same tiny iteration on both executors, side by side (most of the Ray run is Ray starting up)."""
    args = ["flywheel", "--preset", "tiny", "--iterations", "1", "--workers", "2"]
    cases = {ex: [*args, "--executor", ex, "--out", str(tmp_path / ex)] for ex in ("local", "ray")}
    (tmp_path / "logs").mkdir()
    done = run_cli_many(cases, tmp_path / "logs")
    runs = {}
    for executor, r in done.items():
        run = tmp_path / executor
        assert r.returncode == 0, r.stderr[-3000:]
        assert f"({executor}, 2 at a time)" in r.stdout
        runs[executor] = [(e["file"], e["n_steps"], e["max_x"]) for e in scan(run / "corpus").episodes]
        assert (run / "iter001" / "summary.json").exists() and (run / "hof" / "catalog.json").exists()
    collected = [e for e in runs["ray"] if not e[0].startswith("explore/")]
    assert len(collected) == 6 and runs["ray"] == runs["local"], "Ray actors play and explore the same episodes"
