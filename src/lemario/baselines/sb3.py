"""Stable-Baselines3, imported once and quietly for the baselines.

SB3 imports gym when it is installed (nes-py needs it), and gym prints a deprecation notice to stderr on import,
which would turn the CLI's one-line errors into five lines.
"""

import contextlib
import io

with contextlib.redirect_stderr(io.StringIO()):
    from stable_baselines3 import PPO
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.monitor import Monitor
    from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnvWrapper, VecNormalize

__all__ = ["PPO", "BaseCallback", "DummyVecEnv", "Monitor", "SubprocVecEnv", "VecEnvWrapper", "VecNormalize"]
