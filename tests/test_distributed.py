"""DistributedDataParallel: two CPU processes (gloo) train alike, each rank
drawing its own directions (tests/scripts/ddp_check.py)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import MODES

BACKENDS = MODES
HERE = Path(__file__).resolve().parent


@pytest.mark.heavy
@pytest.mark.parametrize("backend", BACKENDS)
def test_distributed_data_parallel_two_cpu_processes(backend):
    env = dict(os.environ)
    if backend == "triton":
        env["TRITON_INTERPRET"] = "1"
    out = subprocess.run(
        [sys.executable, str(HERE / "scripts" / "ddp_check.py"), backend],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["own_z"], "each rank must draw its own directions"
    assert result["identical"] == [True, True, True], "replicas must stay identical"


