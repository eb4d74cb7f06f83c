"""Fetches snnTorch's own ``test_leaky.py`` for the installed snnTorch from its
source distribution on PyPI, once per tox environment (tox.ini runs this
before pytest; nothing of snnTorch's is kept in this repository):

    python tests/fetch_snntorch_tests.py DIR

0.9.4 and 1.0.0 ship no tests in their sdist; for them the newest earlier
release that does (0.9.1) is used. Always exits 0: without a reachable
registry it says so, and test_snntorch_suite.py skips with that reason.
"""

import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

#: releases whose sdist contains tests/test_snntorch/test_leaky.py
SDISTS_WITH_TESTS = ["0.7.0", "0.8.0", "0.8.1", "0.9.0", "0.9.1"]
FILE = "test_leaky.py"


def _version(v):
    return tuple(int(p) for p in v.split(".")[:3])


def source_release(installed: str) -> str:
    candidates = [v for v in SDISTS_WITH_TESTS if _version(v) <= _version(installed)]
    return max(candidates, key=_version)


def fetch(target_dir: Path) -> str:
    import snntorch

    release = source_release(snntorch.__version__)
    target = target_dir / FILE
    if target.exists():
        return f"snnTorch {release}'s {FILE} already in {target_dir}"
    with tempfile.TemporaryDirectory() as download:
        out = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary",
             ":all:", f"snntorch=={release}", "-d", download],
            capture_output=True, text=True,
        )
        if out.returncode != 0:
            return f"could not download snnTorch {release}'s sdist: {out.stderr.strip()[-300:]}"
        (archive,) = Path(download).glob("snntorch-*.tar.gz")
        with tarfile.open(archive) as tar:
            member = tar.getmember(f"snntorch-{release}/tests/test_snntorch/{FILE}")
            target_dir.mkdir(parents=True, exist_ok=True)
            target.write_bytes(tar.extractfile(member).read())
            (target_dir / "RELEASE").write_text(release)
    return f"fetched snnTorch {release}'s {FILE} into {target_dir}"


if __name__ == "__main__":
    print(fetch(Path(sys.argv[1])))
