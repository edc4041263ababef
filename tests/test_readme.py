"""The README's harness example runs as written (a fresh interpreter, like a reader's)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_readme_harness_example_runs() -> None:
    [example] = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert "open_dcorch" in example
    done = subprocess.run(
        [sys.executable, "-c", example + "\nprint('example finished')\n"],
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().endswith("example finished")
