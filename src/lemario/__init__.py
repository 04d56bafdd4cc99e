"""lemario: a JEPA world model that learns NES Super Mario Bros from pixels, and the tools to measure it."""

import os

# OpenMP's idle threads spin 3,000 times, not libgomp's 300,000, before they sleep. libgomp reads this when torch loads
# it: set here, before any torch import, so lemario's processes and their children get it, unless either variable
# that sets the waiting is already set. Two world-model trainings of 2 threads each on 2 cores made 0.29 of one's
# steps/s alone with the default spinning and 0.49-0.51 with this, 1-5% slower alone (sleeping at once: 0.58, but
# 11-12% slower alone; docs/RESULTS.md, session 57; `benchmarks/shared_cores.py`).
if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
    os.environ["GOMP_SPINCOUNT"] = "3000"

__version__ = "0.1.0"
