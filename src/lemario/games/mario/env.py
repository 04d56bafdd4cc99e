"""`SuperMarioBros`: a Gymnasium environment for any level W-S on either emulator backend.

Each agent step holds one action's buttons for `frame_skip` frames; the observation is the stack of the last
`frame_stack` preprocessed frames (max of the last two emulator frames, canonical palette, grayscale,
area-resized: `lemario.games.mario.frames.process`).
`info` carries the RAM labels of `lemario.games.mario.ram` plus the reward triple of `lemario.games.mario.rewards`.
Labels are read from the RAM the last screen shows: the screen lags RAM by one frame on both cores
(tests/games/test_backends.py), so the env reads RAM one emulator frame before the step's end, and a step's labels
describe the frame its observation ends on.

States: `save_state()` returns a `MarioState` from which `reset(options={"state": s})` starts an episode. On
retro it holds the emulator's own snapshot; on both it holds the frame-by-frame button log since boot, which
nes-py (and the other backend) restores by replaying from the level start.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import gymnasium as gym
import numpy as np

from lemario.core.errors import LemarioError
from lemario.games.mario import frames
from lemario.games.mario.actions import action_bytes, action_set
from lemario.games.mario.emulator import BACKENDS, boot, make_emulator, parse_level
from lemario.games.mario.ram import info_from_ram
from lemario.games.mario.rewards import DEATH_PENALTY, step_rewards

RAM_FRAME = "shown"
"""Which frame's RAM `env.ram` and the labels hold, recorded with every episode: 'shown', the RAM the last screen
shows; corpora written before it hold 'end' (the RAM after the step's last frame, one frame ahead of the screen)."""


@dataclass(frozen=True)
class EnvConfig:
    level: str = "1-1"
    """Level W-S (worlds 1-8, stages 1-4)."""
    backend: str = "retro"
    """Emulator: 'retro' (stable-retro FCEUmm, fast) or 'nes-py' (the reference LaiNES)."""
    action_set: str = "complex"
    """'right-only' (5 actions), 'simple' (7) or 'complex' (12)."""
    frame_skip: int = 4
    """Emulator frames per agent step; the observation max-pools the last two."""
    resize: int = 84
    """Observation side in pixels (0 keeps the 224x240 picture)."""
    grayscale: bool = True
    """Grayscale observations; False gives RGB (H, W, 3) frames."""
    frame_stack: int = 4
    """Frames per observation."""
    crop_top: int = 0
    """Screen rows cut from the top before resizing: 32 removes the HUD (score, coins, world, clock), so the
    playfield fills the frame."""
    pool: bool = True
    """Each frame the max of the last two emulator frames (sprites flicker); False: the last one alone."""
    life_loss_terminal: bool = True
    """End the episode when Mario starts dying; False plays on until game over."""
    max_steps: int = 1500
    """Agent steps before the episode is truncated."""
    noop_max: int = 0
    """Reset waits a seeded random number of 0..noop_max no-op agent steps (diversifies deterministic agents)."""
    rom: str | None = None
    """Path to the ROM; default: the one inside gym-super-mario-bros."""

    def validate(self) -> None:
        parse_level(self.level)
        action_set(self.action_set)
        if self.backend not in BACKENDS:
            raise LemarioError(f"unknown backend {self.backend!r}: use one of {', '.join(BACKENDS)}")
        if self.frame_skip < 2:
            raise LemarioError(
                f"frame_skip must be at least 2 (the last two frames are max-pooled), got {self.frame_skip}"
            )
        if self.frame_stack < 1 or self.max_steps < 1 or self.resize < 0 or self.noop_max < 0:
            raise LemarioError("frame_stack and max_steps must be >= 1, resize and noop_max >= 0")
        if not 0 <= self.crop_top <= 64:
            raise LemarioError(f"--crop-top {self.crop_top}: cut 0 to 64 rows (32 is the HUD)")

    def validate_levels(self, levels: tuple[str, ...]) -> None:
        """A `--levels` list: each a level this env can boot (with its other settings), none twice."""
        for level in levels:
            replace(self, level=level).validate()
        if len(set(levels)) < len(levels):
            raise LemarioError(f"--levels {' '.join(levels)} names a level twice: list each once")

    @property
    def frame_shape(self) -> tuple[int, ...]:
        return frames.frame_shape(self.resize, self.grayscale, self.crop_top)

    @property
    def preprocessing(self) -> dict:
        """What a world model reading these frames must have been trained on (`control.agents.check_frames`)."""
        return {
            "frame_stack": self.frame_stack,
            "image_size": self.resize,
            "crop_top": self.crop_top,
            "pool": self.pool,
        }


@dataclass
class MarioState:
    """Everything needed to continue from a moment of play, on either backend."""

    level: str
    backend: str
    buttons: bytes  # controller byte of every frame since boot
    snapshot: bytes | None  # the backend's own state (retro), None where it has none (nes-py)
    stack: np.ndarray = field(repr=False)  # (frame_stack, *frame_shape) observation at that moment
    ram: np.ndarray = field(repr=False)  # (2048,) RAM at that moment
    rgb: np.ndarray = field(repr=False)  # (224, 240, 3) last emulator frame as the backend drew it (not in snapshots)


class SuperMarioBros(gym.Env):
    metadata = {"render_modes": ["rgb_array"], "render_fps": 15}

    def __init__(self, config: EnvConfig = EnvConfig(), render_mode: str | None = None):
        config.validate()
        self.config = config
        self.render_mode = render_mode
        self.world, self.stage = parse_level(config.level)
        self.actions = action_set(config.action_set)
        self._bytes = action_bytes(config.action_set)
        self.action_space = gym.spaces.Discrete(len(self.actions))
        self.observation_space = gym.spaces.Box(0, 255, (config.frame_stack, *config.frame_shape), np.uint8)
        self.emu = make_emulator(config.backend, config.rom)
        boot(self.emu, self.world, self.stage)
        self._boot_snapshot = self.emu.snapshot()
        if self._boot_snapshot is None:
            self.emu.backup()  # nes-py: its single backup slot holds the level start
        # Emulator states do not include the screen buffer: keep the level-start picture for every reset.
        self._boot_rgb = self.emu.screen()
        self._frames = np.zeros((config.frame_stack, *config.frame_shape), np.uint8)  # the stack, oldest first
        self._log = bytearray()
        self._read_ram()
        self._rgb = self._boot_rgb
        self._steps = 0

    # ---- episode ------------------------------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        state: MarioState | None = (options or {}).get("state")
        if state is not None:
            self._restore(state)
        else:
            self._to_level_start()
            self._frames[:] = self._process(self._boot_rgb, self._boot_rgb)
            self._rgb = self._boot_rgb
            self._read_ram()
            for _ in range(int(self.np_random.integers(0, self.config.noop_max + 1))):
                self._advance(0)
        self._steps = 0
        return self._obs(), dict(self._labels, progress=0.0, score_delta=0.0, death=0, flag=0, steps=0)

    def step(self, action: int):
        if not 0 <= action < len(self._bytes):
            raise ValueError(f"action {action} outside the {self.config.action_set} set of {len(self._bytes)} actions")
        prev = self._labels
        self._advance(self._bytes[action])
        self._steps += 1
        progress, score_delta, death, flag = step_rewards(prev, self._labels)
        info = dict(
            self._labels,
            progress=progress,
            score_delta=score_delta,
            death=int(death),
            flag=int(flag),
            steps=self._steps,
        )
        terminated = bool(
            info["flag_get"]
            or (self.config.life_loss_terminal and info["is_dying"])
            or info["lives"] == 0xFF  # game over
        )
        truncated = not terminated and self._steps >= self.config.max_steps
        return self._obs(), progress - DEATH_PENALTY * death, terminated, truncated, info

    def _advance(self, byte: int) -> None:
        """One agent step: hold `byte` for frame_skip frames, pool the last two frames into the stack; the labels
        come from the RAM of the frame before the last, which the last screen shows."""
        skip, pool = self.config.frame_skip, self.config.pool
        for i in range(skip):
            self.emu.step(byte)
            if i == skip - 2:
                prev = self.emu.screen() if pool else None  # the unpooled frame is the last alone
                self._read_ram()
        self._rgb = self.emu.screen()
        self._frames[:-1] = self._frames[1:]  # numpy copies overlapping slices correctly
        self._frames[-1] = self._process(prev, self._rgb)
        self._log += bytes((byte,)) * skip

    def _read_ram(self, ram: np.ndarray | None = None) -> None:
        self._ram = (self.emu.ram if ram is None else ram).copy()
        self._labels = info_from_ram(self._ram)

    def _process(self, prev: np.ndarray | None, last: np.ndarray) -> np.ndarray:
        cfg = self.config
        return frames.process(prev, last, cfg.backend, cfg.grayscale, cfg.resize, cfg.crop_top, cfg.pool)

    def _obs(self) -> np.ndarray:
        return self._frames.copy()  # (frame_stack, H, W[, 3])

    # ---- states -------------------------------------------------------------------------------------------------
    def _to_level_start(self) -> None:
        if self._boot_snapshot is not None:
            self.emu.restore(self._boot_snapshot)
        else:
            self.emu.restore_backup()
        self._log = bytearray()

    def save_state(self) -> MarioState:
        return MarioState(
            level=self.config.level,
            backend=self.config.backend,
            buttons=bytes(self._log),
            snapshot=self.emu.snapshot(),
            stack=self._obs(),
            ram=self._ram.copy(),
            rgb=np.array(self._rgb),
        )

    def _restore(self, state: MarioState) -> None:
        if state.level != self.config.level:
            raise LemarioError(
                f"the state is from level {state.level}, this env plays {self.config.level}: make an env for "
                f"{state.level}"
            )
        if state.stack.shape != self.observation_space.shape:
            raise LemarioError(
                f"the state's frames have shape {state.stack.shape}, this env's {self.observation_space.shape}: "
                "use the same frame settings"
            )
        if state.snapshot is not None and state.backend == self.config.backend:
            self.emu.restore(state.snapshot)
            self._rgb = state.rgb
        else:  # replay the button log from the level start (deterministic on both backends)
            self._to_level_start()
            for byte in state.buttons:
                self.emu.step(byte)
            self._rgb = self.emu.screen()
        self._log = bytearray(state.buttons)
        self._frames[:] = state.stack
        self._read_ram(state.ram)  # the RAM the state's screen showed, not the live RAM a frame later

    # ---- frames for people --------------------------------------------------------------------------------------
    def rgb_frame(self) -> np.ndarray:
        """The last emulator frame as (224, 240, 3) RGB in the canonical palette (for videos)."""
        return frames.canonical_rgb(self._rgb, self.config.backend).copy()

    def render(self):
        return self.rgb_frame() if self.render_mode == "rgb_array" else None

    @property
    def last_frame(self) -> np.ndarray:
        """The newest preprocessed frame (H, W[, 3]), what the corpus stores per step."""
        return self._frames[-1].copy()

    @property
    def ram(self) -> np.ndarray:
        """The RAM the last screen shows, one emulator frame before the step's end (a copy owned by the env); the
        emulator's live RAM is `env.emu.ram`."""
        return self._ram

    def close(self):
        if getattr(self, "emu", None) is not None:
            self.emu.close()
            self.emu = None
