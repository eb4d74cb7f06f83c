"""snnTorch's own Leaky tests, run with ``snn.Leaky`` replaced by ``localzo.Leaky``.

The test file comes from snnTorch's source distribution on PyPI, fetched once
per tox environment by ``tests/fetch_snntorch_tests.py`` into the folder named
by ``SNNTORCH_LOCALZO_SNNTORCH_TESTS`` (tox.ini sets both). It runs in every
mode: the reference path, the native CPU path (auto) and the fused kernels
(through Triton's interpreter on CPU).
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import MODES

FOLDER = os.environ.get("SNNTORCH_LOCALZO_SNNTORCH_TESTS")

CONFTEST = """
import snntorch
import snntorch_localzo

snntorch.Leaky = snntorch_localzo.Leaky  # every snn.Leaky(...) in the tests is ours
"""


def _snntorch_test_file() -> Path:
    if not FOLDER:
        pytest.skip("SNNTORCH_LOCALZO_SNNTORCH_TESTS is not set: run "
                    "`python tests/fetch_snntorch_tests.py DIR` and point it at DIR (tox does)")
    path = Path(FOLDER) / "test_leaky.py"
    if not path.is_file():
        pytest.skip(f"snnTorch's test_leaky.py is not in {FOLDER}: the registry was not "
                    "reachable when tests/fetch_snntorch_tests.py ran")
    return path


@pytest.mark.parametrize("backend", MODES)
def test_snntorch_leaky_tests_pass_with_localzo_leaky(tmp_path, backend):
    source = _snntorch_test_file()
    (tmp_path / "test_leaky.py").write_text(source.read_text())
    (tmp_path / "conftest.py").write_text(CONFTEST)
    env = dict(os.environ, SNNTORCH_LOCALZO_BACKEND=backend)
    if backend == "triton":
        env.setdefault("TRITON_INTERPRET", "1")
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        capture_output=True, text=True, env=env, cwd=tmp_path,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert " passed" in out.stdout and "failed" not in out.stdout
