"""nes-py (reference) and stable-retro (fast) give the same game from the same buttons."""

import numpy as np
import pytest

from lemario.games.mario import frames
from lemario.games.mario import ram as R
from lemario.games.mario.emulator import boot, make_emulator

# Bytes the two cores may legitimately disagree on: the cores cut frames at different points of the NMI
# handler and lag on different frames, so scratch bytes, the frame counter and the timers/RNG it drives,
# the CPU stack, the sprite/VRAM staging buffers, the sound engine and the joypad shadow differ in timing.
# Everything the game's physics and the labels use is compared exactly.
TIMING_BYTES = np.zeros(R.RAM_SIZE, bool)
for lo, hi in [
    (0x00, 0x08),
    (0x09, 0x0A),
    (0xE7, 0x100),
    (0x100, 0x200),
    (0x200, 0x300),
    (0x300, 0x320),
    (0x340, 0x342),
    (0x6FC, 0x6FD),
    (0x74A, 0x74B),
    (0x71F, 0x720),
    (0x747, 0x748),
    (0x772, 0x775),
    (0x778, 0x77A),
    (0x77F, 0x780),
    (0x781, 0x790),
    (0x795, 0x796),
    (0x7A0, 0x7A1),
    (0x7A7, 0x7AE),
    (0x7B0, 0x7D0),
]:
    TIMING_BYTES[lo:hi] = True


def run_frames(backend, buttons):
    emu = make_emulator(backend)
    boot(emu, 1, 1)
    rams, screens = [emu.ram.copy()], [frames.canonical_rgb(emu.screen(), backend)]
    for b in buttons:
        emu.step(int(b))
        rams.append(emu.ram.copy())
        screens.append(frames.canonical_rgb(emu.screen(), backend))
    emu.close()
    return np.stack(rams), np.stack(screens)


@pytest.fixture(scope="module")
def trajectories():
    rng = np.random.default_rng(0)
    buttons = np.repeat(
        rng.choice([0x00, 0x80, 0x81, 0x82, 0x83, 0x01, 0x40], 100, p=[0.05, 0.3, 0.25, 0.15, 0.15, 0.05, 0.05]), 4
    )
    return {b: run_frames(b, buttons) for b in ("nes-py", "retro")}


def test_same_buttons_same_physics_every_frame(trajectories):
    ram_ref, _ = trajectories["nes-py"]
    ram_fast, _ = trajectories["retro"]
    assert len(ram_ref) == 401
    lab_ref, lab_fast = R.label_table(ram_ref), R.label_table(ram_fast)
    np.testing.assert_array_equal(lab_ref, lab_fast)
    assert lab_ref[:, R.LABELS.index("x_pos")].max() > 300, "the sequence should travel"


def test_same_buttons_same_ram_outside_timing_bytes(trajectories):
    ram_ref, _ = trajectories["nes-py"]
    ram_fast, _ = trajectories["retro"]
    differ = (ram_ref != ram_fast).any(axis=0)
    assert not (differ & ~TIMING_BYTES).any(), [hex(a) for a in np.flatnonzero(differ & ~TIMING_BYTES)]
    assert (ram_ref[:, ~TIMING_BYTES] == ram_fast[:, ~TIMING_BYTES]).all()
    assert (~TIMING_BYTES).sum() >= 1400, "over two thirds of RAM is compared byte for byte"


def test_same_buttons_same_frames(trajectories):
    """In the canonical palette the two cores draw identical pictures, pixel for pixel."""
    _, scr_ref = trajectories["nes-py"]
    _, scr_fast = trajectories["retro"]
    np.testing.assert_array_equal(scr_ref, scr_fast)


@pytest.mark.parametrize("backend,table", [("nes-py", frames.NESPY_PALETTE), ("retro", frames.RETRO_PALETTE)])
def test_palette_tables_match_the_emulators(backend, table):
    emu = make_emulator(backend)
    boot(emu, 1, 1)
    measured = frames.measure_palette(emu)
    emu.close()
    np.testing.assert_array_equal(measured, table)


def test_nespy_palette_maps_to_the_canonical_one():
    canon = frames.canonical_rgb(frames.NESPY_PALETTE[None], "nes-py")[0]
    np.testing.assert_array_equal(canon, frames.RETRO_PALETTE)


def test_a_clear_found_on_retro_replays_on_nespy(make_env):
    """The 514-step clear of 1-1 in tests/fixtures was found on the fast backend; the reference plays it out too."""
    from conftest import scripted_actions

    for backend in ("retro", "nes-py"):
        env = make_env(backend=backend)
        _, info = env.reset()
        for a in scripted_actions("flag_1-1.txt"):
            *_, term, trunc, info = env.step(a)
            if term or trunc:
                break
        assert info["flag_get"] == 1 and info["x_pos"] == 3161 and info["steps"] == 514, (backend, info)


@pytest.mark.parametrize("backend", ["retro", "nes-py"])
def test_the_screen_shows_the_ram_of_the_frame_before(backend):
    """Label/frame alignment, measured: during a jump, the top row of Mario's red pixels on frame t's screen keeps a
    fixed offset from RAM's y (0x3B8) of frame t-1, not of frame t. So a step's labels (RAM after its last frame) are
    one frame ahead of its last screen, and the stored frame (max-pool of the last two screens) shows frames t-2 and
    t-1 of RAM (issue 16's label audit)."""
    rams, screens = run_frames(backend, [0] * 5 + [0x01] * 40 + [0] * 30)  # one held jump from the spawn
    red = (screens == [216, 40, 0]).all(-1)  # Mario's cap and shirt; nothing else red near the spawn
    red[:, :, 80:] = False
    top = np.array([np.flatnonzero(r.any(1)).min() for r in red])  # (T+1,) top row of Mario on each screen
    y = rams[:, R.Y_PIXEL].astype(int)
    moving = np.flatnonzero(y[1:] != y[:-1]) + 1  # frames whose RAM y changed
    assert len(moving) > 30, "the jump moves Mario on most frames"
    assert np.ptp(top[moving] - y[moving - 1]) <= 1, "a fixed offset to the previous frame's RAM (pose: +-1 row)"
    assert np.ptp(top[moving] - y[moving]) >= 4, "not to the same frame's"


def _mario_top(screen: np.ndarray) -> int:
    """Top row of Mario's red pixels (cap and shirt; nothing else red near the spawn) on a (224, 240, 3) screen."""
    red = (screen == [216, 40, 0]).all(-1)
    red[:, 80:] = False
    return int(np.flatnonzero(red.any(1)).min())


@pytest.mark.parametrize("backend", ["retro", "nes-py"])
def test_the_env_labels_the_frame_its_observation_ends_on(backend):
    """The env reads RAM one frame before a step's end: its y keeps a fixed offset from Mario's top row on the
    step's last screen (the test above shows the screen lags RAM by one frame)."""
    from lemario.games.mario.env import EnvConfig, SuperMarioBros

    env = SuperMarioBros(EnvConfig(backend=backend))
    try:
        env.reset()
        tops, ys = [], []
        for action in [0] * 2 + [5] * 12 + [0] * 10:  # NOOP, then A held: one jump from the spawn
            _, _, _, _, info = env.step(action)
            tops.append(_mario_top(env.rgb_frame()))
            ys.append(int(env.ram[R.Y_PIXEL]))
            assert info["y_pos"] == 511 - 256 * int(env.ram[R.Y_VIEWPORT]) - ys[-1], "labels are env.ram's"
    finally:
        env.close()
    tops, ys = np.array(tops), np.array(ys)
    assert np.ptp(ys) > 30, "the jump moves Mario"
    assert np.ptp(tops - ys) <= 1, "a fixed offset (pose: +-1 row)"


def test_the_crop_cuts_the_hud_and_no_pool_keeps_the_last_frame():
    rng = np.random.default_rng(0)
    prev, last = (frames.RETRO_PALETTE[rng.integers(0, 64, (224, 240))].astype(np.uint8) for _ in range(2))
    whole = frames.process(prev, last, "retro", True, 0)
    assert whole.shape == (224, 240)
    cut = frames.process(prev, last, "retro", True, 0, crop_top=32)
    np.testing.assert_array_equal(cut, whole[32:])  # the rows below the HUD, untouched
    assert frames.frame_shape(0, True, 32) == cut.shape and frames.frame_shape(84, True, 32) == (84, 84)
    last_only = frames.process(prev, last, "retro", True, 0, pool=False)
    np.testing.assert_array_equal(last_only, frames.process(last, last, "retro", True, 0))
    np.testing.assert_array_equal(last_only, frames.process(None, last, "retro", True, 0, pool=False))
    assert (whole >= last_only).all() and (whole > last_only).any(), "the max of two frames is brighter"


def test_a_cropped_env_gives_the_playfield(make_env):
    env = make_env(crop_top=32, resize=0)
    obs = env.reset(seed=0)[0]
    assert obs.shape == (4, 192, 240) and env.config.preprocessing["crop_top"] == 32
    np.testing.assert_array_equal(obs[-1], frames.process(env._rgb, env._rgb, "retro", True, 0, 32))
    env.close()  # one retro emulator a process
    unpooled = make_env(crop_top=32, resize=0, pool=False)
    unpooled.reset(seed=0)
    for _ in range(3):
        obs = unpooled.step(3)[0]  # running right: the screen changes every step
    np.testing.assert_array_equal(obs[-1], frames.process(None, unpooled._rgb, "retro", True, 0, 32, pool=False))
