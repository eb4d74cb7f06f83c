"""Long runs: saved state is freed every step (tests/scripts/memory_check.py)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import MODES

BACKENDS = MODES
HERE = Path(__file__).resolve().parent


@pytest.mark.parametrize("backend", BACKENDS)
def test_memory_does_not_grow_over_many_steps(backend):
    """Saved state is freed every step: after warm-up, the live tensors (count
    and bytes) are the same after 50 and after 150 training steps (30 and 60
    on the interpreter). Measured in a fresh process (tests/scripts/memory_check.py),
    where no other test's tensors come and go."""
    first, last = (30, 60) if backend == "triton" else (50, 150)
    out = subprocess.run(
        [sys.executable, str(HERE / "scripts" / "memory_check.py"), backend, str(first), str(last)],
        capture_output=True, text=True, env=dict(os.environ), timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert 0.0 < result["active"] < 1.0  # the backward ran, sparsely
    assert result["first"][0] > 0
    assert result["first"] == result["last"]
