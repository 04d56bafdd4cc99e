"""Progress bars draw on a terminal and stay silent in a log (`lemario.core.progress`)."""

import io

from lemario.core.progress import progress_bar


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def drawn(progress: bool, out: io.StringIO) -> str:
    bar = progress_bar(total=3, progress=progress, unit="ep", file=out, mininterval=0)
    for _ in range(3):
        bar.update(1)
    bar.set_postfix({"best_x": 7})  # what the collector does on a silent bar too
    bar.close()
    return out.getvalue()


def test_a_terminal_gets_the_bar():
    assert "3/3" in drawn(True, Terminal())


def test_a_log_file_gets_nothing():
    assert drawn(True, io.StringIO()) == "", "stderr redirected to a file: no carriage-return redraws in it"


def test_no_progress_draws_nothing_even_on_a_terminal():
    assert drawn(False, Terminal()) == ""
