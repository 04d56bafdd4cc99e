"""Progress bars: tqdm on a terminal, nothing in a log.

Every long command draws a bar unless given --no-progress. Where its stderr is not a terminal (output redirected to
a log, a job under nohup, a test) the bar stays off by itself: its redraws would fill the log with carriage-return
lines (session 49 found `lemario study draws`' bar in a log). A command's own lines print either way.
"""

from __future__ import annotations

from tqdm import tqdm


def progress_bar(iterable=None, *, progress: bool, **kwargs) -> tqdm:
    """A tqdm bar when `progress` and stderr is a terminal, a silent one otherwise (its updates do nothing)."""
    return tqdm(iterable, disable=None if progress else True, dynamic_ncols=True, **kwargs)
