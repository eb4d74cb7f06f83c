"""snnTorch's own Leaky tests, run with ``snn.Leaky`` replaced by ``localzo.Leaky``.

The test file comes from snnTorch's source distribution on PyPI (fetched with
pip, cached under ~/.cache/snntorch-localzo). 0.9.4 and 1.0.0 ship no tests in
their sdist; for them the newest earlier release that does (0.9.1) is used.
It runs on both backends: the reference path and the fused kernels (through
Triton's interpreter on CPU).
"""

import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import snntorch

from snntorch_localzo import _backend

#: releases whose sdist contains tests/test_snntorch/test_leaky.py
SDISTS_WITH_TESTS = ["0.7.0", "0.8.0", "0.8.1", "0.9.0", "0.9.1"]
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "snntorch-localzo"

CONFTEST = """
import snntorch
import snntorch_localzo

snntorch.Leaky = snntorch_localzo.Leaky  # every snn.Leaky(...) in the tests is ours
"""


def _version(v):
    return tuple(int(p) for p in v.split(".")[:3])


def source_release(installed: str) -> str:
    candidates = [v for v in SDISTS_WITH_TESTS if _version(v) <= _version(installed)]
    return max(candidates, key=_version)


def fetch_test_leaky(release: str) -> str:
    target = CACHE / f"snntorch-{release}-test_leaky.py"
    if not target.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        download = CACHE / f"sdist-{release}"
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
             "--no-binary", ":all:", f"snntorch=={release}",
             "-d", str(download)],
            check=True, capture_output=True,
        )
        (archive,) = download.glob("snntorch-*.tar.gz")
        with tarfile.open(archive) as tar:
            member = tar.getmember(f"snntorch-{release}/tests/test_snntorch/test_leaky.py")
            target.write_bytes(tar.extractfile(member).read())
    return target.read_text()


BACKENDS = ["reference"]
if _backend.triton_available():
    BACKENDS.append("triton")


@pytest.mark.parametrize("backend", BACKENDS)
def test_snntorch_leaky_tests_pass_with_localzo_leaky(tmp_path, backend):
    release = source_release(snntorch.__version__)
    (tmp_path / "test_leaky.py").write_text(fetch_test_leaky(release))
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
