"""Reward shaping for model-free baselines: the recipe of the PPO project that cleared 1-1 (seed 001).

forward      forward_scale * (increase of the episode's max x)   -- not raw dx, which Mario farms by wagging
backward     -backward_scale * (decrease of x)
milestone    milestone_bonus each time the max x passes another multiple of milestone_step
hurdle       hurdle_bonus the first time the max x passes each x in hurdles
flag         flag_bonus once, when Mario touches the flagpole
time         -time_penalty every step
stall        -stall_penalty every step once the max x has not grown for stall_steps steps
death        -death_penalty when Mario starts dying (life loss ends the episode: the env's default)
"""

from __future__ import annotations

from dataclasses import dataclass

import gymnasium as gym


@dataclass(frozen=True)
class ShapingConfig:
    forward_scale: float = 0.15
    backward_scale: float = 0.05
    flag_bonus: float = 200.0
    milestone_step: int = 50
    milestone_bonus: float = 0.5
    hurdles: tuple[int, ...] = (600, 1200, 1800, 2400, 3000)
    hurdle_bonus: float = 10.0
    time_penalty: float = 0.0
    stall_steps: int = 120
    stall_penalty: float = 0.0
    death_penalty: float = 15.0


class ShapedReward(gym.Wrapper):
    def __init__(self, env: gym.Env, cfg: ShapingConfig | None = None):
        super().__init__(env)
        self.cfg = cfg or ShapingConfig()

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        self.max_x = self.x = info["x_pos"]
        self.milestones = self.max_x // self.cfg.milestone_step
        self.hurdles_left = [h for h in self.cfg.hurdles if h > self.max_x]
        self.flag_paid = False
        self.since_progress = 0
        return obs, info

    def step(self, action):
        obs, _, terminated, truncated, info = self.env.step(action)
        cfg, x = self.cfg, info["x_pos"]
        parts = {
            "forward": 0.0,
            "backward": 0.0,
            "milestone": 0.0,
            "hurdle": 0.0,
            "flag": 0.0,
            "time": -cfg.time_penalty,
            "stall": 0.0,
            "death": 0.0,
        }
        if x > self.max_x:
            parts["forward"] = cfg.forward_scale * (x - self.max_x)
            self.max_x, self.since_progress = x, 0
            reached = self.max_x // cfg.milestone_step
            parts["milestone"] = cfg.milestone_bonus * max(0, reached - self.milestones)
            self.milestones = max(self.milestones, reached)
            passed = [h for h in self.hurdles_left if self.max_x >= h]
            parts["hurdle"] = cfg.hurdle_bonus * len(passed)
            self.hurdles_left = [h for h in self.hurdles_left if h not in passed]
        else:
            self.since_progress += 1
        if x < self.x and info["progress"] != 0:  # a real step back (teleports count 0 progress)
            parts["backward"] = -cfg.backward_scale * (self.x - x)
        self.x = x
        if info["flag_get"] and not self.flag_paid:
            parts["flag"], self.flag_paid = cfg.flag_bonus, True
        if self.since_progress >= cfg.stall_steps:
            parts["stall"] = -cfg.stall_penalty
        if info["death"]:
            parts["death"] = -cfg.death_penalty
        info = dict(info, shaping=parts, max_x=self.max_x)
        return obs, float(sum(parts.values())), terminated, truncated, info
