"""The CLI's progress bar: redrawn in place on a terminal, throttled plain lines elsewhere."""

from __future__ import annotations

import io

from connector._progress import Progress, render_bar


def test_render_bar_shows_fraction_and_counts() -> None:
    assert render_bar("p0", 500, 1000, width=10) == "p0 [#####.....]  50% 500/1,000"
    assert render_bar("p0", 2000, 1000, width=4) == "p0 [####] 100% 1,000/1,000"
    assert render_bar("p0", 7, 0) == "p0 7"  # an empty partition: nothing to measure against


def test_terminal_redraws_the_same_line_and_finishes_it() -> None:
    out = io.StringIO()
    bar = Progress("p1", 10, stream=out, tty=True)
    bar.update(5)
    bar.update(10)
    bar.finish("rebuilt: 3 rows")
    text = out.getvalue()
    assert text.count("\n") == 1
    assert text.count("\r") == 3
    assert text.endswith("\r\x1b[Kp1 rebuilt: 3 rows\n")


def test_elsewhere_prints_plain_lines_at_most_every_interval() -> None:
    out = io.StringIO()
    now = [0.0]
    bar = Progress("p2", 100, stream=out, tty=False, every_s=5.0, clock=lambda: now[0])
    for step in range(10):
        now[0] = step * 1.0
        bar.update(step * 10)
    bar.finish("done")
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert lines == [render_bar("p2", 0, 100), render_bar("p2", 50, 100), "p2 done"]
