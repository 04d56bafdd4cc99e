"""The push game's server: the WebSocket protocol through a test client, and a real browser playing a match."""

import json
import os
import re
import socket
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from lemario.control.gaussian_cem import GaussianCEMConfig
from lemario.model.train import PRESETS, train
from lemario.play.push_data import PushDataConfig, generate
from lemario.web.push_server import MAX_MESSAGE, ServeConfig, create_app

CHROMIUM = "/usr/bin/chromium"
FAST_CEM = GaussianCEMConfig(samples=16, iterations=2)


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("push-serve")
    generate(PushDataConfig(out=root / "data", episodes=8, turns=2, workers=1, progress=False))
    cfg = replace(PRESETS["push-tiny"], corpus=root / "data", out=root / "wm", steps=10, progress=False)
    train(replace(cfg, tensorboard=False))
    return root / "wm" / "model.safetensors"


def receive_until(ws, kind: str) -> list[dict]:
    out = []
    while True:
        out.append(json.loads(ws.receive_text()))
        if out[-1]["type"] in (kind, "error"):
            return out


def test_a_whole_match_through_the_protocol(model):
    app = create_app(ServeConfig(model=model, cem=FAST_CEM, front=0.0))
    with TestClient(app) as client, client.websocket_connect("/ws") as ws:
        ws.send_text(json.dumps({"type": "new_match", "seed": 3, "side": "amber"}))
        start = json.loads(ws.receive_text())
        assert start["type"] == "state" and start["actor"] == "amber" and start["opponent"] == "model"
        kinds, over = [], None
        for turn in range(5):
            ws.send_text(json.dumps({"type": "human_turn", "targets": [[256, 256], [200, 250]]}))
            got = receive_until(ws, "turn_result")
            kinds += [m["type"] for m in got]
            ws.send_text(json.dumps({"type": "model_turn"}))
            got = receive_until(ws, "match_over" if turn == 4 else "turn_result")
            kinds += [m["type"] for m in got]
            plan = got[0]
            assert plan["type"] == "plan" and len(plan["samples"]) == 16 * 2 and len(plan["samples"][0]["t_path"]) == 5
            assert (plan["searched"], plan["plans"]) == (5, 5)  # replanned each step, every plan searched
            over = got[-1]
        assert kinds.count("step_frame") == 50 and kinds.count("turn_result") == 10
        assert over["type"] == "match_over" and over["winner"] in ("amber", "cyan", "draw")
        ws.send_text(json.dumps({"type": "model_turn"}))
        assert "over" in json.loads(ws.receive_text())["message"]


@pytest.mark.parametrize(
    "message,error",
    [
        ("not json", "not JSON"),
        ("x" * (MAX_MESSAGE + 1), "over the"),
        (json.dumps({"type": "dance"}), "unknown message"),
        (json.dumps({"type": "model_turn"}), "out of turn"),
        (json.dumps({"type": "human_turn", "targets": [[1, 2]] * 4}), "1 to 3"),
        (json.dumps({"type": "human_turn", "targets": [[600, 2]]}), "off the board"),
        (json.dumps({"type": "human_turn", "targets": "here"}), "waypoints"),
        (json.dumps({"type": "new_match", "side": "red"}), "side"),
        (json.dumps({"type": "new_match", "seed": -1}), "seed"),
        (json.dumps({"type": "human_turn", "targets": [[float("nan"), 2]]}), "off the board"),
    ],
)
def test_bad_messages_get_an_error_and_the_server_goes_on(message, error):
    app = create_app(ServeConfig(opponent="chase_t"))
    with TestClient(app) as client, client.websocket_connect("/ws") as ws, client.websocket_connect("/ws") as other:
        ws.send_text(json.dumps({"type": "new_match", "seed": 1}))
        other.send_text(json.dumps({"type": "new_match", "seed": 2, "side": "cyan"}))
        assert json.loads(ws.receive_text())["type"] == "state"
        ws.send_text(message)
        reply = json.loads(ws.receive_text())
        assert reply["type"] == "error" and error in reply["message"]
        ws.send_text(json.dumps({"type": "human_turn", "targets": [[300, 300]]}))  # the match goes on
        assert receive_until(ws, "turn_result")[-1]["type"] == "turn_result"
        first = json.loads(other.receive_text())  # and so does another tab's, where the opponent moves first
        assert first["type"] == "state" and first["side"] == "cyan"
        other.send_text(json.dumps({"type": "model_turn"}))
        assert receive_until(other, "turn_result")[-1]["next"] == "cyan"


@pytest.mark.parametrize("opponent", ["model", "oracle"])
def test_a_front_keeps_the_rules_turn_away_from_the_t(model, opponent):
    """A front no disc comes within: every plan is the warm rule's turn, scored alone, and the plan says so."""
    app = create_app(ServeConfig(model=model, opponent=opponent, cem=FAST_CEM, front=1e-9))
    with TestClient(app) as client, client.websocket_connect("/ws") as ws:
        ws.send_text(json.dumps({"type": "new_match", "seed": 3, "side": "cyan"}))
        assert json.loads(ws.receive_text())["actor"] == "amber"
        ws.send_text(json.dumps({"type": "model_turn"}))
        got = receive_until(ws, "turn_result")
        plan = got[0]
        assert plan["type"] == "plan" and len(plan["samples"]) == 1 and (plan["searched"], plan["plans"]) == (0, 5)
        assert [m["type"] for m in got[1:]] == ["step_frame"] * 5 + ["turn_result"]


def test_serve_config_errors():
    with pytest.raises(Exception, match="--model PATH"):
        create_app(ServeConfig(model=Path("no-such/model.safetensors")))
    with pytest.raises(Exception, match="unknown opponent"):
        create_app(ServeConfig(opponent="bully"))
    with pytest.raises(Exception, match="--front 30.0: .* a --warm rule"):
        create_app(ServeConfig(opponent="oracle", warm="", front=30.0))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="Debian's chromium is installed by scripts/setup.sh")
def test_a_person_plays_a_match_in_a_real_browser(model):
    from playwright.sync_api import sync_playwright

    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "lemario.cli", "push", "serve", "--model", str(model), "--port", str(port),
         "--cem.samples", "16", "--cem.iterations", "3"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        assert "open http://127.0.0.1" in server.stdout.readline()
        for _ in range(100):  # until uvicorn listens
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.1)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            page = browser.new_page()
            page.goto(f"http://127.0.0.1:{port}/")
            page.wait_for_function("document.getElementById('status').textContent.includes('Click waypoints')")
            board = np.frombuffer(page.locator("#board").screenshot(type="png"), np.uint8)
            assert board.size > 1000  # the board is drawn
            for turn in range(5):
                page.wait_for_function("!document.getElementById('status').textContent.includes('planning')")
                page.locator("#board").click(position={"x": 250, "y": 250})
                page.locator("#board").click(position={"x": 150, "y": 260})
                page.locator("#play").click()
                if turn < 4:
                    page.wait_for_function("document.getElementById('status').textContent.startsWith('your turn')",
                                           timeout=60_000)  # fmt: skip
                    assert int(page.locator("body").get_attribute("data-dream-paths")) > 0  # the dream field drew
                    assert re.fullmatch(r"[0-5] of 5", page.locator("#searched").text_content())  # front 30
            page.wait_for_function("getComputedStyle(document.getElementById('result')).display === 'flex'",
                                   timeout=60_000)  # fmt: skip
            assert page.locator("#result-text").text_content() in ("You win", "The model wins", "Draw")
            assert int(page.locator("#timeline").get_attribute("max")) == 50  # every frame kept for the timeline
            browser.close()
    finally:
        server.terminate()
        server.wait(10)
