"""Every kernel compiles for the H100 (sm_90) with the installed Triton, on
the CPU (see aot_compile.py): catches what the interpreter cannot, such as
type errors in branches, unsupported operations and register blow-ups."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from snntorch_localzo import _backend

pytestmark = [
    pytest.mark.aot,
    pytest.mark.skipif(not _backend.triton_available(), reason="needs Triton"),
]


def test_all_kernels_compile_for_sm90(tmp_path):
    env = dict(os.environ, TRITON_INTERPRET="0", TRITON_CACHE_DIR=str(tmp_path))
    out = subprocess.run(
        [sys.executable, str(Path(__file__).with_name("aot_compile.py"))],
        capture_output=True, text=True, env=env,
    )
    assert out.returncode == 0, out.stderr[-4000:]
    assert "compiled" in out.stdout and "for sm_90" in out.stdout
