"""RAM labels against scripted situations on 1-1: standing, jumping, falling into the first pit, dying."""

import numpy as np

from lemario.games.mario import ram as R
from lemario.games.mario.rewards import ENEMY_STEPS, PIT_Y, doomed, episode_rewards, step_rewards

from conftest import scripted_actions

NOOP, RIGHT, RIGHT_A, A = 0, 1, 2, 5  # complex action set indices


def play(env, actions):
    _, info = env.reset()
    infos, rams, done = [info], [env.ram], (False, False)
    for a in actions:
        _, _, *done, info = env.step(a)
        infos.append(info)
        rams.append(env.ram)
        if any(done):
            break
    return infos, np.stack(rams), done


def test_standing_still(make_env):
    infos, _, _ = play(make_env(), [NOOP] * 20)
    assert {i["x_pos"] for i in infos} == {40}
    assert all(i["on_ground"] == 1 and i["x_vel"] == 0 and i["y_vel"] == 0 and i["is_dying"] == 0 for i in infos)
    assert infos[0]["y_pos"] == infos[-1]["y_pos"]
    assert infos[-1]["time"] < 400, "the level clock runs while standing"


def test_jump_velocity_changes_sign_at_the_top(make_env):
    infos, _, _ = play(make_env(), [NOOP] * 3 + [A] * 12 + [NOOP] * 15)
    y = np.array([i["y_pos"] for i in infos])
    vy = np.array([i["y_vel"] for i in infos])
    ground = y[0]
    top = int(np.argmax(y))
    assert y[top] > ground + 40, "holding A for 12 steps is a high jump"
    assert (vy[4:top] < 0).all(), "y_vel is negative while rising"
    assert (vy[top + 1 : top + 4] > 0).all(), "and positive while falling"
    assert infos[top]["on_ground"] == 0 and infos[-1]["on_ground"] == 1 and y[-1] == ground
    assert infos[top]["float_state"] in (1, 2)


def test_running_right_moves_x_with_positive_velocity(make_env):
    infos, _, _ = play(make_env(), [RIGHT] * 15)
    x = [i["x_pos"] for i in infos]
    assert all(b >= a for a, b in zip(x, x[1:])) and x[-1] > 60
    assert infos[-1]["x_vel"] > 0


def test_walking_into_the_first_goomba_kills(make_env):
    infos, rams, (term, trunc) = play(make_env(), [RIGHT] * 200)
    assert term and not trunc
    last = infos[-1]
    assert last["is_dying"] == 1 and last["player_state"] == R.PLAYER_DYING and last["death"] == 1
    assert 250 < last["x_pos"] < 500
    assert all(i["is_dying"] == 0 for i in infos[:-1])


def test_the_first_goomba_comes_near_as_mario_walks_into_it(make_env):
    _, rams, _ = play(make_env(), [RIGHT] * 200)
    enemy = R.enemy_labels(rams)
    dx, near = enemy["enemy_dx"], enemy["enemy_near"]
    assert dx[0] == R.ENEMY_FAR and near[0] == 0, "at spawn no enemy is in play"
    active = np.flatnonzero(dx < R.ENEMY_FAR)
    assert len(active) > 0 and (active == np.arange(active[0], len(dx))).all(), "once in play it stays ahead"
    assert dx[active[0]] > R.ENEMY_NEAR, "it comes into play farther than 'near'"
    assert (np.diff(dx[active]) <= 0).all(), "Mario and the goomba walk toward each other"
    assert abs(dx[-1]) <= 16 and near[-1] == 1, "at the death the goomba touches Mario"
    assert (R.enemy_labels(rams[-1])["enemy_dx"] == dx[-1]).all(), "one snapshot gives the same label"


def test_falling_into_the_first_pit(make_env):
    infos, rams, (term, _) = play(make_env(), scripted_actions("pit_1-1.txt"))
    last = infos[-1]
    assert term and last["is_dying"] == 1 and last["death"] == 1
    assert last["player_state"] == R.PLAYER_NORMAL, "a pit death is seen through the viewport, not the player state"
    assert rams[-1][R.Y_VIEWPORT] > 1 and last["y_pos"] < infos[0]["y_pos"]
    assert 1000 < last["x_pos"] < 1300


def test_coin_block_gives_a_coin_and_200_points(make_env):
    # walk to x = 251, under the first ? block of 1-1, stop, and jump into it from below
    infos, _, _ = play(make_env(), [RIGHT] * 30 + [NOOP] * 8 + [A] * 10 + [NOOP] * 10)
    before = infos[38]
    assert before["x_pos"] == 251 and before["coins"] == 0 and before["score"] == 0
    assert infos[-1]["coins"] == 1 and infos[-1]["score"] == 200


def test_fast_and_vectorized_labels_agree(make_env):
    infos, rams, _ = play(make_env(), scripted_actions("pit_1-1.txt"))
    table = R.label_table(rams)
    for t, row in enumerate(table):
        fast = R.info_from_ram(rams[t])
        assert dict(zip(R.LABELS, row.tolist())) == fast
        assert all(infos[t][k] == v for k, v in fast.items())
    rewards = episode_rewards(table)
    for t in range(len(infos) - 1):  # progress and score alike; the env's death is the onset, the corpus's earlier
        step = step_rewards(infos[t], infos[t + 1])
        assert tuple(rewards[t, :2]) == step[:2] and rewards[t, 2] >= step[2] and rewards[t, 3] == step[3] == 0
    assert rewards[-1, 2] == 1 and rewards[:, 2].sum() > 1
    assert abs(rewards[:, 0].sum() - (infos[-1]["x_pos"] - infos[0]["x_pos"])) < 1e-6


def test_a_pit_fall_is_doomed_before_the_viewport_says_so(make_env):
    infos, rams, _ = play(make_env(), scripted_actions("pit_1-1.txt"))
    table = R.label_table(rams)
    d = doomed(table)
    y = table[:, R.LABELS.index("y_pos")]
    onset = next(t for t, i in enumerate(infos) if i["is_dying"])
    first = int(np.argmax(d))
    assert d[first:].all() and not d[:first].any()
    assert y[first] < PIT_Y <= y[first - 1], "doomed from the first frame a tile below the floor"
    assert onset - first >= 3, "several steps of warning before the onset the env reports"
    assert all(i["on_ground"] == 0 for i in infos[first:])


def test_an_enemy_contact_is_doomed_a_few_steps_before(make_env):
    env = make_env()
    infos, rams, _ = play(env, [RIGHT] * 200)
    d = doomed(R.label_table(rams))
    onset = next(t for t, i in enumerate(infos) if i["is_dying"])
    assert d.sum() == ENEMY_STEPS + len(infos) - onset and d[onset - ENEMY_STEPS :].all()
    assert not doomed(R.label_table(play(env, [NOOP] * 20)[1])).any(), "no death, nothing doomed"


def test_retro_variables_agree_with_ram_map(make_env):
    """stable-retro reads lemario's integration data.json itself: its values must match ram.py's decoding."""
    env = make_env()
    play(env, [RIGHT] * 12 + [RIGHT_A] * 6)
    emu = env.emu
    lab = R.labels(emu.ram.copy())  # retro's lookups read the live RAM (env.ram is the frame before's)
    assert emu.lookup("x_page") * 256 + emu.lookup("x_screen") == lab["x_pos"]
    assert emu.lookup("y_vel") == lab["y_vel"] and emu.lookup("x_vel") == lab["x_vel"]
    assert emu.lookup("time") == lab["time"] and emu.lookup("lives") == lab["lives"]
    assert emu.lookup("score") * 10 == lab["score"]


def test_touching_the_flagpole_ends_the_episode(make_env):
    infos, rams, (term, trunc) = play(make_env(), scripted_actions("flag_1-1.txt"))
    last = infos[-1]
    assert term and not trunc
    assert last["flag_get"] == 1 and last["is_dying"] == 0 and last["death"] == 0
    assert last["x_pos"] >= 3150, "the 1-1 flagpole stands at x = 3161"
    assert all(i["flag_get"] == 0 for i in infos[:-1])
    assert last["flag"] == 1 and all(i["flag"] == 0 for i in infos[:-1]), "the env's flag channel: the touch"
    rewards = episode_rewards(R.label_table(rams))
    assert rewards[:, 3].tolist() == [0.0] * (len(infos) - 2) + [1.0], "the corpus's flag: the step that touches"
    assert not rewards[:, 2].any()


def test_eating_the_mushroom_makes_mario_big(make_env):
    infos, rams, _ = play(make_env(), scripted_actions("mushroom_1-1.txt"))
    power = [i["powerup"] for i in infos]
    assert power[0] == 0 and power[-1] == 1, "0 small -> 1 big"
    grew = power.index(1)
    assert all(p == 0 for p in power[:grew]) and 300 < infos[grew]["x_pos"] < 500
    assert rams[-1][0x754] == 0, "PlayerSize (0x754) agrees once the growing animation ends: 0 is big"
    assert infos[-1]["score"] - infos[grew]["score"] == 1000, "a mushroom is worth 1000 points"


def _takeoffs(infos) -> int:
    """Times Mario left the ground."""
    ground = [i["on_ground"] for i in infos]
    return sum(a == 1 and b == 0 for a, b in zip(ground, ground[1:]))


def test_the_jump_latch_a_held_a_gives_one_takeoff(make_env):
    """The game starts a jump only if A was released on the previous frame: held through a landing, A does not jump
    again (the previous action is part of the state a frame stack does not show); released and pressed, it does."""
    env = make_env()
    held, _, _ = play(env, [NOOP] * 3 + [A] * 40)  # one press held through the landing and beyond
    assert _takeoffs(held) == 1 and held[-1]["on_ground"] == 1
    released, _, _ = play(env, [NOOP] * 3 + [A] * 20 + [NOOP] + [A] * 20)  # land, release one step, press again
    assert _takeoffs(released) == 2


def test_level_indexes_number_the_32_levels_and_name_them_back():
    """1-1 is 1, 1-4 is 4, 2-1 is 5, 8-4 is 32 (0 stays free for 'no level'); the world and stage labels read
    from RAM give the same index as the level's name."""
    from lemario.games.mario.emulator import level_number

    assert [R.level_index(w, s) for w, s in ((1, 1), (1, 4), (2, 1), (8, 4))] == [1, 4, 5, 32]
    names = [f"{w}-{s}" for w in range(1, 9) for s in range(1, 5)]
    assert [R.level_name(level_number(n)) for n in names] == names
    assert sorted(level_number(n) for n in names) == list(range(1, R.N_LEVELS + 1))
    ram = np.zeros(2048, np.uint8)
    ram[R.WORLD], ram[R.STAGE] = 3, 1  # 0-based in RAM: 4-2
    labels = R.labels(ram)
    assert R.level_index(labels["world"], labels["stage"]) == level_number("4-2") == 14
