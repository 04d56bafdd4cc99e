"""Random Network Distillation (Burda et al.): a curiosity bonus for screens the agent has rarely seen.

A fixed random CNN embeds the newest frame; a predictor CNN learns to match it on visited frames. The bonus
is the prediction error, divided by a running standard deviation of past bonuses. `RNDBonus` is a VecEnv
wrapper: it adds coef * bonus to the environment reward and trains the predictor on every batch of steps.
Its whole state (both networks, the optimizer, the running statistics) goes into a safetensors file with the
agent's checkpoint, so a resumed run keeps its sense of novelty.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from lemario.baselines.sb3 import VecEnvWrapper
from lemario.core import checkpoint


def _cnn(out: int = 128) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 32, 8, 4),
        nn.LeakyReLU(),
        nn.Conv2d(32, 64, 4, 2),
        nn.LeakyReLU(),
        nn.Conv2d(64, 64, 3, 1),
        nn.LeakyReLU(),
        nn.Flatten(),
        nn.Linear(64 * 7 * 7, out),
    )


class RND(nn.Module):
    def __init__(self, lr: float = 1e-4, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.target, self.predictor = _cnn(), _cnn()
        self.target.requires_grad_(False)
        self.opt = torch.optim.Adam(self.predictor.parameters(), lr=lr)
        self.register_buffer("count", torch.tensor(1e-4, dtype=torch.float64))
        self.register_buffer("mean", torch.tensor(0.0, dtype=torch.float64))
        self.register_buffer("var", torch.tensor(1.0, dtype=torch.float64))

    def error(self, frames: torch.Tensor) -> torch.Tensor:  # (N, 1, 84, 84) in [0, 1] -> (N,)
        return (self.predictor(frames) - self.target(frames)).square().mean(-1)

    def bonus_and_update(self, frames: np.ndarray) -> np.ndarray:
        """Normalized bonus of each frame (N, 84, 84) uint8, then one predictor step on them."""
        x = torch.from_numpy(frames).float().div_(255)[:, None]
        err = self.error(x)
        bonus = err.detach().double()
        self._update_stats(bonus)
        loss = err.mean()
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        return (bonus / self.var.sqrt().clamp_min(1e-8)).float().numpy()

    def _update_stats(self, x: torch.Tensor) -> None:
        batch_mean, batch_var, n = x.mean(), x.var(unbiased=False), float(len(x))
        delta, total = batch_mean - self.mean, self.count + n
        self.mean += delta * n / total
        self.var = (self.var * self.count + batch_var * n + delta.square() * self.count * n / total) / total
        self.count = total

    def state_tensors(self) -> dict[str, torch.Tensor]:
        return {
            **{f"rnd/{k}": v for k, v in self.state_dict().items()},
            **checkpoint.optimizer_tensors(self.opt, "rnd_optim"),
        }

    def load_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        self.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("rnd/")})
        checkpoint.load_optimizer(self.opt, tensors, "rnd_optim")

    def save(self, path: Path) -> None:
        checkpoint.save(path, self.state_tensors(), {"kind": "rnd"})

    def load(self, path: Path) -> None:
        tensors, _ = checkpoint.load(path, kind="rnd")
        self.load_tensors(tensors)


class RNDBonus(VecEnvWrapper):
    def __init__(self, venv, rnd: RND, coef: float):
        super().__init__(venv)
        self.rnd, self.coef = rnd, coef

    def reset(self):
        return self.venv.reset()

    def step_wait(self):
        obs, rewards, dones, infos = self.venv.step_wait()
        bonus = self.rnd.bonus_and_update(obs[:, -1])  # the newest frame of each stack
        for info, b in zip(infos, bonus):
            info["rnd_bonus"] = float(b)
        return obs, rewards + self.coef * bonus, dones, infos
