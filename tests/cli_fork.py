"""Run many `lemario` command lines at the cost of one start: import the command once, then fork a process per
command line, its stdout and stderr on files and its exit status its own, as `python -m lemario.cli ARGS` gives.

`python tests/cli_fork.py CASES.json OUT` with CASES.json [[name, [arg, ...]], ...] writes OUT/name.out,
OUT/name.err and OUT/status.json ({name: exit status}); at most two command lines run at once.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path

from lemario import cli


def _child(args: list[str], out: str, name: str) -> None:
    """In the forked process: the command line with stdout and stderr on files; never returns."""
    for fd, suffix in ((1, "out"), (2, "err")):
        os.dup2(os.open(f"{out}/{name}.{suffix}", os.O_WRONLY | os.O_CREAT | os.O_TRUNC), fd)
    sys.argv = ["lemario", *args]
    code = 0
    try:
        cli.main(args)
    except SystemExit as e:  # as the interpreter maps it
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException:  # an uncaught error: the traceback on stderr, status 1, as the interpreter does
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def main(cases_path: str, out: str, parallel: int = 2) -> None:
    cases = json.loads(Path(cases_path).read_text())
    running: dict[int, str] = {}
    status: dict[str, int] = {}
    for name, args in cases:
        while len(running) >= parallel:
            pid, wait_status = os.wait()
            status[running.pop(pid)] = os.waitstatus_to_exitcode(wait_status)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            _child(args, out, name)
        running[pid] = name
    while running:
        pid, wait_status = os.wait()
        status[running.pop(pid)] = os.waitstatus_to_exitcode(wait_status)
    Path(out, "status.json").write_text(json.dumps(status))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
