"""The local process pool never hangs: a worker that dies is an error, a SIGTERM stops workers that ignore it.
(A file of its own: `--dist loadfile` can run it beside test_executor.py's long Ray flywheel.)"""

import os
import subprocess
import sys
import time

STUCK_WORK = """
import os, signal, sys, time
from lemario.core.executor import run_parallel

def _interrupt(signum, frame):  # as `lemario` does: a SIGTERM stops a command as Ctrl-C does
    raise KeyboardInterrupt

def work(task):
    seconds, deaf = task
    if deaf:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a worker that does not stop when asked (the worst case)
    print("worker", os.getpid(), flush=True)
    time.sleep(seconds)
    return seconds

if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        deaf = sys.argv[1] == "deaf"
        run_parallel(work, [(120, deaf)] * 3, processes=2)
    except KeyboardInterrupt:
        print("interrupted", flush=True)
    except Exception as e:
        print("error:", e, flush=True)
"""


def _start_stuck_work(tmp_path, workers_ignore_sigterm: bool):
    """The script above, started; returns it and its two workers' pids once both are at work."""
    script = tmp_path / "stuck.py"
    script.write_text(STUCK_WORK)
    deaf = "deaf" if workers_ignore_sigterm else "-"
    proc = subprocess.Popen([sys.executable, str(script), deaf], stdout=subprocess.PIPE, text=True)
    workers = [int(proc.stdout.readline().split()[1]) for _ in range(2)]
    return proc, workers


def _gone(pid: int) -> bool:
    try:
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] == "Z"  # a zombie has exited
    except OSError:
        return True


def test_a_worker_that_dies_is_an_error_not_a_wait(tmp_path):
    """A worker killed mid-task (the OOM killer, a stray kill): the parent says so at once instead of waiting for the
    lost result for ever (multiprocessing.Pool's behaviour), and its other worker is stopped."""
    proc, workers = _start_stuck_work(tmp_path, workers_ignore_sigterm=False)
    os.kill(workers[0], 9)
    out, _ = proc.communicate(timeout=30)
    assert "error: a worker process died" in out and "re-run the command to resume" in out
    assert proc.returncode == 0 and all(_gone(w) for w in workers)


def test_sigterm_stops_the_parent_and_workers_that_ignore_it(tmp_path):
    """A SIGTERM to the parent while its workers ignore SIGTERM: the parent stops them (SIGKILL after the 10-s
    grace) and exits; multiprocessing.Pool's terminate() would join them for ever."""
    proc, workers = _start_stuck_work(tmp_path, workers_ignore_sigterm=True)
    proc.terminate()
    out, _ = proc.communicate(timeout=40)
    assert "interrupted" in out and all(_gone(w) for w in workers)


def test_workers_die_with_a_parent_killed_outright(tmp_path):
    """SIGKILL to the parent (nothing of it runs again): its workers, children of the fork server that outlives it,
    kill themselves, so no orphan plays on."""
    proc, workers = _start_stuck_work(tmp_path, workers_ignore_sigterm=True)
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 10
    while not all(_gone(w) for w in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert all(_gone(w) for w in workers)
