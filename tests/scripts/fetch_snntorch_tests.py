"""Fetches snnTorch's own test folder (``tests/`` of its source distribution
on PyPI: every test file, with the conftest and data files they use) for the
installed snnTorch, once per tox environment (tox.ini runs this before pytest;
nothing of snnTorch's is kept in this repository):

    python tests/scripts/fetch_snntorch_tests.py DIR

DIR then holds the sdist's ``tests/`` folder, e.g. ``DIR/test_snntorch/test_leaky.py``,
and a file ``RELEASE`` naming the release it came from (written last).
0.9.4 and 1.0.0 ship no tests in their sdist; for them the newest earlier
release that does (0.9.1) is used. Always exits 0: without a reachable
registry it says so, and test_snntorch_suite.py skips with that reason.
"""

import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path, PurePosixPath

#: releases whose sdist contains tests/ (with tests/test_snntorch/test_leaky.py)
SDISTS_WITH_TESTS = ["0.7.0", "0.8.0", "0.8.1", "0.9.0", "0.9.1"]


def _version(v):
    return tuple(int(p) for p in v.split(".")[:3])


def source_release(installed: str) -> str:
    candidates = [v for v in SDISTS_WITH_TESTS if _version(v) <= _version(installed)]
    return max(candidates, key=_version)


def _extract_tests(archive: Path, release: str, target_dir: Path) -> int:
    """Writes the regular files under ``snntorch-RELEASE/tests/`` into ``target_dir``."""
    prefix = PurePosixPath(f"snntorch-{release}/tests")
    count = 0
    with tarfile.open(archive) as tar:
        for member in tar.getmembers():
            path = PurePosixPath(member.name)
            if not member.isfile() or prefix not in path.parents or ".." in path.parts:
                continue
            target = target_dir.joinpath(*path.relative_to(prefix).parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(tar.extractfile(member).read())
            count += 1
    return count


def fetch(target_dir: Path) -> str:
    import snntorch

    release = source_release(snntorch.__version__)
    if (target_dir / "RELEASE").exists():
        return f"snnTorch {(target_dir / 'RELEASE').read_text()}'s tests already in {target_dir}"
    with tempfile.TemporaryDirectory() as download:
        out = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary",
             ":all:", f"snntorch=={release}", "-d", download],
            capture_output=True, text=True,
        )
        if out.returncode != 0:
            return f"could not download snnTorch {release}'s sdist: {out.stderr.strip()[-300:]}"
        (archive,) = Path(download).glob("snntorch-*.tar.gz")
        count = _extract_tests(archive, release, target_dir)
    (target_dir / "RELEASE").write_text(release)
    return f"fetched snnTorch {release}'s tests ({count} files) into {target_dir}"


if __name__ == "__main__":
    print(fetch(Path(sys.argv[1])))
