"""Two NES emulator backends behind one small interface, and the boot sequence that takes either to a level.

- `nes-py` (LaiNES, via nes-py 8.2.1): the emulator gym-super-mario-bros and the seed projects used; the reference.
- `retro` (FCEUmm, via stable-retro 1.0.1): several times faster. It runs the ROM shipped inside
  gym-super-mario-bros through lemario's own integration (`retro_integration/`), so nothing is downloaded.

Both expose one frame at a time: `step(buttons)`, the live `ram` (2048 bytes), `screen()` (a new 224x240 RGB array: the
picture FCEUmm shows, i.e. nes-py's 240x256 frame without its 8-pixel border), `write(addr, value)`, and
`snapshot()`/`restore()`. The two cores end a frame at different points of the NMI handler: FCEUmm applies a
button one frame earlier than LaiNES. `RetroEmulator` delays its input by one frame, which makes the game state
of both identical frame by frame (tests/test_backends.py checks the RAM trajectories).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import io
from pathlib import Path

import numpy as np

from lemario.core.errors import LemarioError
from lemario.games.mario import ram as R

BACKENDS = ("retro", "nes-py")
INTEGRATION_DIR = Path(__file__).parent / "retro_integration" / "SuperMarioBros-Nes-lemario"
SCREEN_SHAPE = (224, 240, 3)
_NESPY_CROP = (slice(8, 232), slice(8, 248))  # nes-py's 240x256 frame -> the 224x240 picture


def default_rom_path() -> Path:
    """The Super Mario Bros ROM shipped inside the gym-super-mario-bros package (found without importing it)."""
    spec = importlib.util.find_spec("gym_super_mario_bros")
    if spec is None or spec.origin is None:
        raise LemarioError(
            "gym-super-mario-bros is not installed, so there is no ROM: run scripts/setup.sh or pass --rom PATH"
        )
    return Path(spec.origin).parent / "_roms" / "super-mario-bros.nes"


def resolve_rom(rom: str | None, backend: str = "nes-py") -> Path:
    """The ROM path, checked to exist (and, for retro, to be the ROM its integration was written for)."""
    path = Path(rom) if rom else default_rom_path()
    if not path.is_file():
        raise LemarioError(
            f"ROM not found at {path}: reinstall gym-super-mario-bros==7.4.0 (scripts/setup.sh) or pass --rom PATH"
        )
    if backend == "retro":
        expected = (INTEGRATION_DIR / "rom.sha").read_text().strip()
        found = hashlib.sha1(path.read_bytes()).hexdigest()
        if found != expected:
            raise LemarioError(
                f"ROM {path} has sha1 {found}, lemario's retro integration expects {expected}: use the ROM from "
                "gym-super-mario-bros 7.4.0"
            )
    return path


def parse_level(level: str) -> tuple[int, int]:
    """'W-S' -> (world, stage), both 1-based; worlds 1-8, stages 1-4."""
    try:
        world, stage = (int(p) for p in level.split("-"))
    except ValueError:
        raise LemarioError(f"level {level!r} is not of the form W-S: use e.g. 1-1 or 4-2") from None
    if not (1 <= world <= 8 and 1 <= stage <= 4):
        raise LemarioError(f"unknown level {level!r}: worlds are 1-8 and stages 1-4 (e.g. 1-1, 8-4)")
    return world, stage


def level_number(level: str) -> int:
    """'W-S' -> its index 1..32 (`lemario.games.mario.ram.level_index`)."""
    return R.level_index(*parse_level(level))


class NesPyEmulator:
    """LaiNES through nes-py's C library (one frame per `step`)."""

    name = "nes-py"

    def __init__(self, rom: Path):
        # gym (imported by nes-py) prints a deprecation notice to stderr on import; keep the CLI quiet.
        with contextlib.redirect_stderr(io.StringIO()):
            from nes_py import nes_env
        self._lib = nes_env._LIB
        self._env = nes_env.NESEnv(str(rom))
        self.ram = self._env.ram  # live view, (2048,) uint8

    def power_on(self) -> None:
        self._lib.Reset(self._env._env)
        self.ram[:] = 0  # LaiNES's reset keeps RAM; a cold boot starts from zeroed RAM, as at construction

    def step(self, buttons: int) -> None:
        self._env._frame_advance(buttons)

    def write(self, address: int, value: int) -> None:
        self.ram[address] = value

    def screen(self) -> np.ndarray:
        return self._env.screen[_NESPY_CROP].copy()  # (224, 240, 3); the emulator reuses its buffer

    def snapshot(self) -> bytes | None:
        return None  # LaiNES has one backup slot and no serializable state: states are restored by replay

    def backup(self) -> None:
        self._lib.Backup(self._env._env)

    def restore_backup(self) -> None:
        self._lib.Restore(self._env._env)

    def close(self) -> None:
        self._env.close()


class RetroEmulator:
    """FCEUmm through stable-retro, with a one-frame input delay that aligns it with LaiNES."""

    name = "retro"
    # stable-retro's NES button order
    _ORDER = (0x02, None, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80, 0x01)  # B, -, select, start, up, down, left, right, A

    def __init__(self, rom: Path):
        import stable_retro

        try:
            self._em = stable_retro.RetroEmulator(str(rom))
        except RuntimeError as e:
            raise LemarioError(
                f"could not start stable-retro ({e}): only one retro emulator can live in a process, close the "
                "other env first"
            ) from None
        self._data = stable_retro.data.GameData(
            data=str(INTEGRATION_DIR / "data.json"), scenario=str(INTEGRATION_DIR / "scenario.json")
        )
        self._em.configure_data(self._data)
        self._masks = [
            np.array([1 if (bit and byte & bit) else 0 for bit in self._ORDER], np.uint8) for byte in range(256)
        ]
        self._pending = 0  # the button byte the game sees on the next frame
        self._power_on_state = self._em.get_state()

    def power_on(self) -> None:
        self._em.set_state(self._power_on_state)
        self._pending = 0

    def step(self, buttons: int) -> None:
        self._em.set_button_mask(self._masks[self._pending], 0)
        self._em.step()
        self._pending = buttons

    @property
    def ram(self) -> np.ndarray:
        blocks = self._data.memory.blocks  # live memory, no update_ram() needed
        return np.frombuffer(blocks[0] + blocks[1024], np.uint8)

    def write(self, address: int, value: int) -> None:
        self._data.memory.assign(address, "|u1", int(value))

    def lookup(self, name: str) -> int:
        """A variable of the integration's data.json, read by stable-retro itself (cross-check of ram.py)."""
        return int(self._data.lookup_value(name))

    def screen(self) -> np.ndarray:
        return self._em.get_screen()  # (224, 240, 3), a fresh array

    def snapshot(self) -> bytes:
        return self._em.get_state() + bytes([self._pending])

    def restore(self, snap: bytes) -> None:
        self._em.set_state(snap[:-1])
        self._pending = snap[-1]

    def close(self) -> None:
        del self._em


def make_emulator(backend: str, rom: str | None = None) -> NesPyEmulator | RetroEmulator:
    if backend not in BACKENDS:
        raise LemarioError(f"unknown backend {backend!r}: use one of {', '.join(BACKENDS)}")
    path = resolve_rom(rom, backend)
    return RetroEmulator(path) if backend == "retro" else NesPyEmulator(path)


def boot(emu: NesPyEmulator | RetroEmulator, world: int, stage: int) -> int:
    """Power on, press START through the title screen with the level written to RAM, skip the level intro.

    Ends on the first frame Mario can be controlled. Conditions, not frame counts, drive every step, so both
    backends take the same path. Returns the number of frames run.
    """
    area = stage + (1 if world in (1, 2, 4, 7) and stage >= 2 else 0)  # those worlds have an intro area before x-2
    emu.power_on()
    frames = 0
    while True:
        ram = emu.ram
        mode = ram[R.OPER_MODE]
        if mode == 1 and ram[R.PLAYER_STATE] == R.PLAYER_NORMAL and ram[R.PRELEVEL_TIMER] == 0 and ram[0x772] == 3:
            return frames
        if mode == 0 or ram[0x772] < 3:  # title screen or level loading: keep the chosen level in place
            emu.write(R.WORLD, world - 1)
            emu.write(R.STAGE, stage - 1)
            emu.write(R.AREA, area - 1)
        if mode == 1:
            emu.write(R.PRELEVEL_TIMER, 0)  # skip the "WORLD 1-1" card
        emu.step(0x08 if mode == 0 and frames % 2 == 0 else 0)
        frames += 1
        if frames > 2000:
            raise RuntimeError(f"the game did not reach level {world}-{stage} after 2000 frames")
