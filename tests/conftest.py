import os
import subprocess
import sys
from pathlib import Path

import pytest

from lemario.games.mario.env import EnvConfig, SuperMarioBros

DATA = Path(__file__).parent / "fixtures"


def pytest_configure(config):
    """Under pytest-xdist the two workers share the two cores: one torch thread each, and in the CLIs they start."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
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


def run_cli(*args: str, timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
    # a clean environment for Ray: nothing set by an earlier test in this process may make a Ray test pass
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("RAY_")}, "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [sys.executable, "-m", "lemario.cli", *args], capture_output=True, text=True, timeout=timeout, env=env, **kwargs
    )
