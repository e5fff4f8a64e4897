"""The README's "Your own model" script, run as a user runs it: it cannot rot."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def readme_script() -> str:
    """The first ```python block of the README's section "## Your own model"."""
    text = (REPO / "README.md").read_text()
    section = text.split("\n## Your own model\n", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readme_script_trains_and_reports_its_test_top1(skeleton_store, tmp_path):
    """Runs the section's first python block verbatim on a 240-sample store, in a fresh interpreter from
    another folder (2 DataLoader workers), and reads its last line. Catches the example breaking
    against the dataset's arguments, keys or attributes."""
    script = tmp_path / "tiny.py"
    script.write_text(readme_script())
    result = subprocess.run([sys.executable, str(script), str(skeleton_store)], cwd=tmp_path,
                            capture_output=True, text=True, timeout=600,
                            env={"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)})
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith("119 training and 120 test samples"), lines
    top1 = re.fullmatch(r"test top-1: ([0-9.]+) \((\d+) of 120\)", lines[-1])
    assert top1, lines
    assert 0.3 <= float(top1.group(1)) <= 1  # chance is 1/6: 30 steps learn something
