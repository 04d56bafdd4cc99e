"""lemario: a JEPA world model that learns NES Super Mario Bros from pixels, and the tools to measure it."""

import os

# OpenMP's idle threads sleep rather than spin (libgomp reads this when torch loads it: before any torch import, so
# lemario's processes and their children get it; a value already set is kept). Two trainings of 2 threads each
# sharing 2 cores with libgomp's default spinning made 45 world-model steps where one alone made 439 in the same 3
# minutes; sleeping, 241 of 412 (docs/RESULTS.md, session 57; `benchmarks/shared_cores.py`).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
