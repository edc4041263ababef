"""The README's harness example runs as written (a fresh interpreter, like a reader's).

The example asserts its own claims: after the first ``wait_converged`` every subcloud has
finished its initial sync, so a proxied write is recorded as one request per subcloud (an
initial sync still running would leave that subcloud out: docs/behaviour.md#recording-work).
"""

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
    # The claims stay asserted in the example, not only written in its comments.
    assert 'request_regions("users"' in example
    assert "assert len(targets) == 20" in example
    done = subprocess.run(
        [sys.executable, "-c", example + "\nprint('example finished')\n"],
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().endswith("example finished")
