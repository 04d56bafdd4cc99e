"""The push game: physics, the win rule, goal mode, rendering, and the scripted players' strength."""

import json
import math

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from lemario.core.errors import LemarioError
from lemario.games.push.board import (
    DISC_RADIUS,
    GOALS,
    SIZE,
    STATE_DIM,
    T_POS,
    Board,
    clip_thrust,
    random_start,
    t_extent,
    turn_motion,
)
from lemario.games.push.env import PushConfig, PushGame, goal_reached, match_result
from lemario.games.push.opponents import Waypoints, chase_t, route, scripted
from lemario.games.push.render import PLAYER_COLOURS, render
from lemario.play.push_match import paired

from conftest import run_cli, run_cli_many


def play(env, seed, actions):
    _, info = env.reset(seed=seed)
    states = [info["state"]]
    for a in actions:
        _, _, term, trunc, info = env.step(a)
        states.append(info["state"])
        if term or trunc:
            break
    return np.stack(states)


def test_gymnasium_api():
    env = PushGame()
    check_env(env, skip_render_check=True)
    obs, info = env.reset(seed=3)
    assert obs.shape == (64, 64, 3) and obs.dtype == np.uint8
    assert info["state"].shape == (STATE_DIM,) and info["actor"] == 0 and info["turn"] == 0


def test_physics_is_deterministic_under_a_seed():
    actions = np.random.default_rng(0).uniform(-1, 1, (50, 2)).astype(np.float32)
    a, b = play(PushGame(), 7, actions), play(PushGame(), 7, actions)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, play(PushGame(), 8, actions))  # another seed, another start


def test_state_round_trip_and_rest():
    state = random_start(np.random.default_rng(1))
    board = Board()
    board.set_state(state)
    assert np.allclose(board.state(), state, atol=1e-4)
    board.step(np.zeros((2, 2)))
    assert np.allclose(board.state(), state, atol=1e-4)  # nothing moves unless pushed


def test_held_thrust_reaches_its_terminal_speed_and_damping_stops_it():
    board = Board()
    state = np.zeros(STATE_DIM, np.float32)
    state[0:2], state[4:6], state[8:10] = (60, 60), (450, 450), (256, 400)
    board.set_state(state)
    for _ in range(10):  # 1 s: three time constants of the damping
        board.step(np.array([[1.0, 0.0], [0.0, 0.0]]))
    speed = board.state()[2]
    assert 270 < speed < 310 and abs(board.state()[3]) < 1e-3
    for _ in range(10):
        board.step(np.zeros((2, 2)))
    assert board.state()[2] < 0.1 * speed
    assert np.allclose(clip_thrust(np.array([3.0, 4.0])), [0.6, 0.8])


def test_turns_alternate_and_the_idle_disc_stays():
    env = PushGame(PushConfig(turns=2, steps_per_turn=3))
    _, info = env.reset(seed=0)
    actors, cyan_moved = [], []
    for _ in range(env.config.match_steps):
        actors.append(info["actor"])
        before = info["state"][4:6].copy()
        _, _, done, _, info = env.step(np.array([0.0, 1.0]))
        cyan_moved.append(not np.allclose(info["state"][4:6], before))
    assert actors == [0, 0, 0, 1, 1, 1, 0, 0, 0, 1, 1, 1] and done and "winner" in info
    assert cyan_moved[:3] == [False] * 3 and all(cyan_moved[3:6])
    with pytest.raises(LemarioError, match="reset"):
        env.step(np.zeros(2))


def test_turn_motion_is_the_ts_travel_over_each_turn():
    states = np.zeros((7, STATE_DIM), np.float32)
    states[:, T_POS] = [[0, 0], [1, 0], [3, 0], [3, 4], [3, 4], [9, 12], [9, 12]]  # 3 turns of 2 steps
    assert np.allclose(turn_motion(states, 2), [3.0, 4.0, 10.0])


def test_win_rule_on_constructed_end_states():
    state = np.zeros(STATE_DIM, np.float32)
    state[T_POS] = GOALS[0] + [40, 0]
    assert match_result(state, 8.0) == 0
    state[T_POS] = GOALS[1] - [40, 0]
    assert match_result(state, 8.0) == 1
    state[T_POS] = (SIZE / 2 + 3, 100)  # 3 units nearer cyan's goal: within the margin
    assert match_result(state, 8.0) == -1 and match_result(state, 2.0) == 1


def test_goal_mode():
    env = PushGame(PushConfig(mode="goal", max_steps=4))
    with pytest.raises(LemarioError, match="goal"):
        env.reset(seed=0)
    start = random_start(np.random.default_rng(2))
    goal = start.copy()
    assert goal_reached(start, goal, 20, math.pi / 9)
    goal[T_POS] += 30
    assert not goal_reached(start, goal, 20, math.pi / 9)
    env.reset(options={"state": start, "goal": goal})
    results = [env.step(np.zeros(2)) for _ in range(4)]
    assert [r[3] for r in results] == [False, False, False, True] and all(r[1] == -1 for r in results)
    _, info = env.reset(options={"state": start, "goal": start})
    _, reward, term, _, info = env.step(np.zeros(2))
    assert term and info["success"] and reward == 0
    with pytest.raises(LemarioError, match="mode"):
        PushGame(PushConfig(mode="race"))


def test_render_draws_the_discs_in_their_colours():
    state = random_start(np.random.default_rng(4))
    big = render(state, 512)
    assert np.array_equal(big, render(state, 512)) and big.shape == (512, 512, 3)
    for i, colour in enumerate(PLAYER_COLOURS):
        x, y = np.round(state[4 * i : 4 * i + 2]).astype(int)
        assert tuple(big[y, x]) == colour
    small = render(state, 64)
    x, y = np.round(state[0:2] / 8).astype(int)
    assert np.abs(small[y, x].astype(int) - PLAYER_COLOURS[0]).max() < 60  # still amber at 64 px


def test_subpixel_frames_show_a_fraction_of_a_pixels_move_that_rounded_ones_do_not():
    state = random_start(np.random.default_rng(3))
    moves = (0.25, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0)  # board units along x; a 64-px pixel is 8
    for part in (T_POS.start, 0):  # the T, amber's disc
        changes = {}
        for subpixel in (False, True):
            base = render(state, subpixel=subpixel).astype(np.int64)
            moved = [state.copy() for _ in moves]
            for m, d in zip(moved, moves):
                m[part] += d
            changes[subpixel] = [np.abs(render(m, subpixel=subpixel) - base).sum() for m in moved]
        assert changes[False][:2] == [0, 0]  # rounded to the drawing's 2-unit pixels: half a unit shows nothing
        assert changes[False][4] == changes[False][5]  # 2 and 2.5 units: the same frame
        assert 0 < changes[True][0] and all(np.diff(changes[True]) > 0)  # every move shows, further ones more
    with_, without = render(state, subpixel=True).astype(int), render(state).astype(int)
    assert np.abs(with_ - without).max() < 60  # the same picture, its edges shaded where the shapes really are


def test_t_extent_and_route_around_the_t():
    assert t_extent(0.0, np.array([1.0, 0.0])) == pytest.approx(60.0)  # half the bar
    state = np.zeros(STATE_DIM, np.float32)
    state[T_POS] = (256, 256)
    state[0:2] = (100, 256)  # amber left of the T, its target right of it: the way is blocked
    way = route(state, 0, np.array([420.0, 256.0]))
    assert np.linalg.norm(way - state[T_POS]) > 60 + DISC_RADIUS and abs(way[1] - 256) > 50
    state[0:2] = (256, 60)  # above, target to the right: the straight path clears it
    assert np.allclose(route(state, 0, np.array([420.0, 60.0])), [420, 60])


def test_chase_t_pushes_the_t_home_against_a_passive_opponent():
    for seed in range(3):
        env = PushGame()
        _, info = env.reset(seed=100 + seed)
        start = info["goal_distances"][0]
        done, players = False, (chase_t, scripted("passive"))
        while not done:
            me = info["actor"]
            _, _, done, _, info = env.step(players[me](info["state"], me))
        assert info["goal_distances"][0] < start - 40 and info["winner"] == 0
    with pytest.raises(LemarioError, match="opponent"):
        scripted("bully")


def test_round_robin_through_the_cli(tmp_path):
    r = run_cli("push", "table", "--players", "passive", "chase_t", "--matches", "4", "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr[-2000:]
    table = json.loads((tmp_path / "table.json").read_text())
    cells = table["cells"]
    assert table["git_commit"] and table["config"]["matches"] == 4  # reproducible from its folder
    assert cells["chase_t vs passive"]["win_rate"] == 1.0 and cells["passive vs chase_t"]["win_rate"] == 0.0
    assert cells["chase_t vs chase_t"]["win_rate"] == 0.5  # the same starts from both sides
    assert {"wins", "draws", "losses", "ci95_low", "mean_progress"} <= set(cells["chase_t vs passive"])
    assert cells["passive vs chase_t"]["pushed_own"] == 0.0  # the passive disc never pushes...
    assert cells["passive vs chase_t"]["moved_own"] > 0.0  # ...though the T may coast on in its turns
    assert cells["chase_t vs passive"]["pushed_own"] > 0.5 and cells["chase_t vs passive"]["moved_own"] > 0.3


def test_a_guarded_planner_reports_how_often_it_kept_the_rules_turn(tmp_path):
    """`--guard` and `--front` (lemario.control.push_players): each match's plans and how many kept the rule's turn,
    their share in the summary and its line; either without a rule to keep is refused in one line."""
    guarded = ("push", "match", "--player", "oracle", "--opponent", "passive", "--matches", "2", "--warm", "chase_t")
    r = run_cli(*guarded, "--guard", "0.5", "--cem.samples", "4", "--cem.iterations", "1", "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr[-2000:]
    record = json.loads((tmp_path / "matches.json").read_text())
    counts = np.array([row["guarded"] for row in record["rows"]])  # (matches, [kept, planned])
    assert (counts[:, 1] == 5).all() and counts[:, 0].sum() > 0  # a plan a turn; chase_t pushes the T in some
    assert record["summaries"]["passive"]["guarded"] == pytest.approx(counts[:, 0].sum() / 10)
    assert "the rule's turn kept in" in r.stdout
    bad = run_cli("push", "match", "--player", "oracle", "--guard", "1")
    assert bad.returncode == 2 and "--warm" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    # `--front`: the plans made away from the pushing point keep the rule's turn, counted the same way
    r = run_cli(*guarded, "--front", "30", "--cem.samples", "4", "--cem.iterations", "1", "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr[-2000:]
    counts = np.array([row["guarded"] for row in json.loads((tmp_path / "matches.json").read_text())["rows"]])
    assert (counts[:, 1] == 5).all() and 0 < counts[:, 0].sum() < 10  # chase_t reaches its pushing point in some
    bad = run_cli("push", "match", "--player", "oracle", "--front", "30")
    assert bad.returncode == 2 and "--front" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1


def test_what_a_player_sees():
    env = PushGame()
    obs0, _ = env.reset(seed=5)
    seen = env.seen(3)
    assert seen.frames.shape == (1, 64, 64, 3) and seen.thrusts.shape == (0, 4) and seen.me == 0
    observed = [obs0]
    for a in ([1.0, 0.0], [0.0, -2.0], [0.5, 0.5]):
        observed.append(env.step(np.array(a))[0])
    seen = env.seen(3)
    assert np.array_equal(seen.frames, np.stack(observed[-3:])) and seen.step_in_turn == 3
    assert np.allclose(seen.thrusts, [[0, -1, 0, 0], [0.5, 0.5, 0, 0]])  # clipped to the unit disc, cyan idle
    assert seen.frames_at(64) is seen.frames
    big = PushGame(PushConfig(obs_size=96))  # a camera of another size sees the same boards
    big.reset(seed=5)
    for a in ([1.0, 0.0], [0.0, -2.0], [0.5, 0.5]):
        big.step(np.array(a))
    assert seen.frames_at(96).shape == (3, 96, 96, 3) and np.array_equal(seen.frames_at(96), big.seen(3).frames)
    fine = PushGame(PushConfig(subpixel=True))  # a model trained on subpixel frames sees them from any game
    fine.reset(seed=5)
    for a in ([1.0, 0.0], [0.0, -2.0], [0.5, 0.5]):
        fine.step(np.array(a))
    assert np.array_equal(seen.frames_at(64, subpixel=True), fine.seen(3).frames)
    drawn = fine.seen(3)
    assert drawn.subpixel and drawn.frames_at(64, subpixel=True) is drawn.frames  # its own frames, not redrawn
    assert not np.array_equal(drawn.frames, seen.frames)


def test_a_persons_waypoints_are_driven_through_in_order():
    board = Board()
    state = np.zeros(STATE_DIM, np.float32)
    state[0:2], state[4:6], state[T_POS] = (60, 60), (450, 450), (400, 100)
    board.set_state(state)
    rule, visited = Waypoints([[200, 60], [200, 250]]), []
    for _ in range(25):
        thrust = np.zeros((2, 2))
        thrust[0] = rule(board.state(), 0)
        board.step(thrust)
        visited.append(board.state()[0:2].copy())
    near = [min(np.linalg.norm(np.array(visited) - p, axis=1)) for p in ([200, 60], [200, 250])]
    assert near[0] < Waypoints.REACHED + 5 and np.linalg.norm(visited[-1] - [200, 250]) < 10  # passed, then stopped
    assert len(rule.points) == 1


def test_matches_paired_on_seed_and_side():
    def row(seed, side, outcome):
        return {"seed": seed, "side": side, "outcome": outcome}

    mine = [row(1, "amber", "win"), row(1, "cyan", "draw"), row(2, "amber", "loss"), row(3, "amber", "win")]
    theirs = [row(1, "cyan", "loss"), row(1, "amber", "win"), row(2, "amber", "win")]  # seed 3 never played
    d = paired(mine, theirs)
    assert d["matches"] == 3 and d["changed"] == 2
    assert d["difference"] == pytest.approx((0 + 0.5 - 1) / 3)
    assert d["ci95_low"] <= d["difference"] <= d["ci95_high"]
    # a pooled player's k-th row of a (seed, side) meets the other's k-th
    twice = paired([row(1, "amber", "win"), row(1, "amber", "loss")], [row(1, "amber", "loss"), row(1, "amber", "win")])
    assert twice["matches"] == 2 and twice["difference"] == 0 and twice["changed"] == 2
    with pytest.raises(LemarioError, match="share no match"):
        paired(mine, [row(9, "amber", "win")])


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """Two players' match records on the same seeds, the second paired with the first: passive and chase_t against
    chase_t (4 matches each); the completed process of the second."""
    root = tmp_path_factory.mktemp("records")
    r = run_cli(
        "push", "match", "--player", "passive", "--opponent", "chase_t", "--matches", "4", "--out", str(root / "a")
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    r = run_cli(
        "push", "match", "--player", "chase_t", "--opponent", "chase_t", "--matches", "4",
        "--paired-with", str(root / "a" / "matches.json"), "--out", str(root / "b"),
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    return root, r


def test_a_player_paired_with_another_through_the_cli(recorded, tmp_path):
    root, r = recorded
    d = json.loads((root / "b" / "matches.json").read_text())["summaries"]["chase_t"]["paired"]
    assert d["matches"] == 4 and d["difference"] == pytest.approx(0.5)  # the mirror's half against passive's none
    assert "paired with" in r.stdout
    # refused in one line before any match is played: no such file, not a match record, no shared seed
    b = str(root / "b" / "matches.json")
    for args in (
        ["--paired-with", str(root / "none.json")],
        ["--paired-with", b, "--opponent", "random"],
        ["--paired-with", b, "--opponent", "chase_t", "--seed", "100"],
    ):
        bad = run_cli("push", "match", "--player", "passive", *args, "--out", str(tmp_path / "c"))
        assert bad.returncode == 2 and "--paired-with" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
        assert not (tmp_path / "c").exists()
    (tmp_path / "other.json").write_text("{}")
    bad = run_cli("push", "match", "--player", "passive", "--paired-with", str(tmp_path / "other.json"))
    assert bad.returncode == 2 and "not a matches.json" in bad.stderr


def test_records_of_several_seeds_pooled_and_paired_through_the_cli(recorded, tmp_path):
    """`push pool`: records read as one player's seeds give the pooled rate, each record's and their spread, and the
    pooled paired difference, each record against its partner."""
    root, _ = recorded
    a, b = str(root / "a" / "matches.json"), str(root / "b" / "matches.json")
    r = run_cli("push", "pool", b, a, "--paired-with", a, a, "--out", str(tmp_path / "pool"))
    assert r.returncode == 0, r.stderr[-2000:]
    s = json.loads((tmp_path / "pool" / "pool.json").read_text())["summaries"]["chase_t"]
    one = json.loads((root / "b" / "matches.json").read_text())["summaries"]["chase_t"]  # 0.5: the mirror match
    assert s["matches"] == 8 and s["per_seed"] == [one["win_rate"], 0.0]  # passive never wins against chase_t
    assert s["win_rate"] == pytest.approx(one["win_rate"] / 2) and s["seed_sd"] == pytest.approx(
        one["win_rate"] / 2**0.5
    )
    assert s["paired"]["matches"] == 8 and s["paired"]["difference"] == pytest.approx(one["win_rate"] / 2)
    assert s["paired"]["changed"] == one["wins"] + one["draws"]  # chase_t's record against passive's; passive's own: 0
    # refused in one line: partners that do not match one for one, a file that is not a record, no such opponent
    (tmp_path / "other.json").write_text("{}")
    (tmp_path / "logs").mkdir()
    got = run_cli_many(
        {
            "count": ["push", "pool", a, b, "--paired-with", a],
            "record": ["push", "pool", a, str(tmp_path / "other.json")],
        },
        tmp_path / "logs",
    )
    assert got["count"].returncode == 2 and "--paired-with has 1 records for 2" in got["count"].stderr
    assert got["record"].returncode == 2 and "push pool" in got["record"].stderr
    for bad in got.values():
        assert len(bad.stderr.strip().splitlines()) == 1
