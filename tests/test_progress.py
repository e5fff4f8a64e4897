"""The progress bar shows counts, rate and ETA."""

from __future__ import annotations

import io

from ntu_pipeline.progress import ProgressBar, format_seconds


def test_line_has_count_rate_and_eta():
    bar = ProgressBar(total=100, unit="samples", label="extract", stream=io.StringIO())
    bar.start -= 10.0  # ten seconds ago
    bar.advance(25)
    line = bar.line()
    assert "25/100 samples" in line and "2.5 samples/s" in line
    assert "ETA 00:30" in line and "elapsed 00:10" in line
    assert "#######" in line and line.count("#") == 7  # 25% of a 30-wide bar


def test_final_draw_on_a_non_terminal_writes_a_line():
    stream = io.StringIO()
    with ProgressBar(total=3, unit="files", label="x", stream=stream) as bar:
        bar.advance(3)
    assert stream.getvalue().strip().startswith("x [") and "3/3 files" in stream.getvalue()


def test_format_seconds():
    assert format_seconds(59) == "00:59" and format_seconds(3725) == "1:02:05"
