import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lemario.games.mario.env import EnvConfig, SuperMarioBros

DATA = Path(__file__).parent / "fixtures"


def pytest_configure(config):
    """One torch thread in every test process, and in the CLIs it starts: under pytest-xdist the two workers share the
    two cores, and a run without workers (`-n 0`) computes as they do (a reduction's float order depends on the
    thread count, and a few trained-model thresholds sit close enough to notice)."""
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)


@pytest.fixture
def make_env():
    """Envs made through this fixture are closed after the test (stable-retro allows one emulator per process)."""
    envs = []

    def _make(**overrides) -> SuperMarioBros:
        env = SuperMarioBros(EnvConfig(**overrides))
        envs.append(env)
        return env

    yield _make
    for env in envs:
        env.close()


def scripted_actions(name: str) -> list[int]:
    """Actions from a run-length file in tests/fixtures ('AxN' tokens, '#' comments)."""
    actions = []
    for line in (DATA / name).read_text().splitlines():
        if line.startswith("#"):
            continue
        for token in line.split():
            a, n = token.split("x")
            actions += [int(a)] * int(n)
    return actions


def _cli_env() -> dict[str, str]:
    """A clean environment for Ray: nothing set by an earlier test in this process may make a Ray test pass."""
    return {**{k: v for k, v in os.environ.items() if not k.startswith("RAY_")}, "PYTHONUNBUFFERED": "1"}


def run_cli(*args: str, timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "lemario.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=_cli_env(),
        **kwargs,
    )


def run_cli_many(
    cases: dict[str, list[str]], logs: Path, timeout: float = 600
) -> dict[str, subprocess.CompletedProcess]:
    """Independent command lines, two at a time, each in its own process forked from one that imported the command
    (`cli_fork.py`: an interpreter start with torch costs ~4 s, several under the suite's load); logs: an empty folder
    for their output. Returns each case's exit status, stdout and stderr, as `run_cli` would."""
    (logs / "cases.json").write_text(json.dumps(list(cases.items())))
    cmd = [sys.executable, str(Path(__file__).parent / "cli_fork.py"), str(logs / "cases.json"), str(logs)]
    subprocess.run(cmd, check=True, timeout=timeout, env=_cli_env(), stdin=subprocess.DEVNULL)
    status = json.loads((logs / "status.json").read_text())
    return {
        name: subprocess.CompletedProcess(
            args, status[name], (logs / f"{name}.out").read_text(), (logs / f"{name}.err").read_text()
        )
        for name, args in cases.items()
    }
