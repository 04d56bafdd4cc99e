#!/usr/bin/env bash
# Sets up lemario in ./.venv on a fresh machine (Python 3.11, a C++ compiler for nes-py). Safe to re-run.
# The push game's browser tests drive Debian's chromium through Playwright: installed here with apt (as root, or
# through sudo), never with `playwright install`.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -c constraints.txt -e ".[test]"
# nes-py pins pyglet<=1.5.21, stable-retro needs pyglet>=1.5.27: install the reference emulator without its pins.
if ! .venv/bin/python -c "import nes_py, gym_super_mario_bros" 2>/dev/null; then
  .venv/bin/python -m pip install -q -c constraints.txt --no-deps nes-py==8.2.1 gym-super-mario-bros==7.4.0
fi
if ! command -v chromium >/dev/null 2>&1; then
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
