"""snnTorch's own tests, run against this package.

The tests come from snnTorch's source distribution on PyPI (its ``tests/``
folder), fetched once per tox environment by ``tests/scripts/fetch_snntorch_tests.py``
into the folder named by ``SNNTORCH_LOCALZO_SNNTORCH_TESTS`` (tox.ini sets
both). Two checks:

- ``test_leaky.py`` with ``snn.Leaky`` replaced by ``localzo.Leaky``, in every
  mode: the reference path, the native CPU path (auto) and the fused kernels
  (through Triton's interpreter on CPU);
- the whole folder with ``localzo.make()`` as every snnTorch neuron's default
  ``spike_grad``: every test that passes with snnTorch's default (ATan) passes.
"""

import json
import os
import shutil
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

#: pytest plugin for the whole-folder runs: records every test's outcome and
#: which spike_grad a plain ``snn.Leaky`` gets; with SNNTORCH_LOCALZO_DEFAULT_MAKE
#: set it first makes every snnTorch neuron built without ``spike_grad`` (or
#: with None) be built as if given ``spike_grad=snntorch_localzo.make()``.
#: Passing the argument in (rather than patching how a release picks its ATan:
#: ``atan()`` in 0.8+, ``self.ATan.apply`` in ``SpikingNeuron`` and ``LIF`` in
#: 0.7) works the same on every snnTorch release.
PLUGIN = '''
import functools
import inspect
import json
import os

import snntorch


def _default_to_make(cls):
    import snntorch_localzo

    init = cls.__init__
    signature = inspect.signature(init)

    @functools.wraps(init)
    def __init__(self, *args, **kwargs):
        bound = signature.bind(self, *args, **kwargs)
        bound.apply_defaults()
        if bound.arguments["spike_grad"] is None:
            bound.arguments["spike_grad"] = snntorch_localzo.make()
        init(*bound.args, **bound.kwargs)

    cls.__init__ = __init__


def _snntorch_classes():
    found, todo = set(), [c for c in vars(snntorch).values() if isinstance(c, type)]
    while todo:
        cls = todo.pop()
        if cls not in found and cls.__module__.startswith("snntorch."):
            found.add(cls)
            todo.extend(cls.__subclasses__())
    return found


if os.environ.get("SNNTORCH_LOCALZO_DEFAULT_MAKE"):
    for cls in _snntorch_classes():
        if "__init__" in vars(cls) and "spike_grad" in inspect.signature(cls.__init__).parameters:
            _default_to_make(cls)

_instances = list(snntorch.SpikingNeuron.instances)
_grad = snntorch.Leaky(beta=0.5).spike_grad
snntorch.SpikingNeuron.instances[:] = _instances
DEFAULT = getattr(_grad, "__qualname__", type(_grad).__qualname__)
if os.environ.get("SNNTORCH_LOCALZO_DEFAULT_MAKE"):
    assert DEFAULT == "LocalZO", f"make() was not patched in: snn.Leaky() got {DEFAULT}"

RANK = {"passed": 0, "skipped": 1, "failed": 2}
OUTCOMES = {}


def pytest_runtest_logreport(report):
    old = OUTCOMES.get(report.nodeid)
    if old is None or RANK[report.outcome] > RANK[old[0]]:
        crash = getattr(report.longrepr, "reprcrash", None)
        line = crash.message if crash else str(report.longrepr or "").strip()
        OUTCOMES[report.nodeid] = [report.outcome, line.splitlines()[0] if line else ""]


def pytest_collectreport(report):
    if report.failed:
        pytest_runtest_logreport(report)


def pytest_sessionfinish(session):
    with open(os.environ["SNNTORCH_LOCALZO_OUTCOMES"], "w") as f:
        json.dump({"default_spike_grad": DEFAULT, "outcomes": OUTCOMES}, f)
'''


def _snntorch_tests() -> Path:
    if not FOLDER:
        pytest.skip("SNNTORCH_LOCALZO_SNNTORCH_TESTS is not set: run "
                    "`python tests/scripts/fetch_snntorch_tests.py DIR` and point it at DIR (tox does)")
    folder = Path(FOLDER)
    if not (folder / "RELEASE").is_file():
        pytest.skip(f"snnTorch's tests are not in {FOLDER}: the registry was not "
                    "reachable when tests/scripts/fetch_snntorch_tests.py ran")
    return folder


@pytest.mark.parametrize("backend", MODES)
def test_snntorch_leaky_tests_pass_with_localzo_leaky(tmp_path, backend):
    source = _snntorch_tests() / "test_snntorch" / "test_leaky.py"
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


def _start_run(folder: Path, root: Path, make_default: bool):
    """Starts pytest on a copy of ``folder`` at ``root/tests`` (the sdist's layout:
    test_nir.py reads ``tests/lif.nir``); returns the process and ``root``."""
    shutil.copytree(folder, root / "tests")
    (root / "plugin").mkdir()
    (root / "plugin" / "snntorch_suite_plugin.py").write_text(PLUGIN)
    env = dict(os.environ, SNNTORCH_LOCALZO_OUTCOMES=str(root / "outcomes.json"),
               PYTHONPATH=os.pathsep.join(filter(None, [str(root / "plugin"),
                                                         os.environ.get("PYTHONPATH")])))
    env.pop("SNNTORCH_LOCALZO_DEFAULT_MAKE", None)
    if make_default:
        env["SNNTORCH_LOCALZO_DEFAULT_MAKE"] = "1"
    with open(root / "output.txt", "w") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
             "-p", "snntorch_suite_plugin", "tests"],
            stdout=output, stderr=subprocess.STDOUT, text=True, env=env, cwd=root,
        )
    return process, root


def _finish_run(process, root: Path) -> dict:
    process.wait()
    outcomes = root / "outcomes.json"
    # 0: all passed, 1: some failed; anything else (no tests, a usage or plugin error) is ours
    assert process.returncode in (0, 1) and outcomes.is_file(), (
        (root / "output.txt").read_text()[-3000:])
    return json.loads(outcomes.read_text())


@pytest.mark.heavy
@pytest.mark.snntorch_suite
def test_snntorch_tests_that_pass_with_atan_pass_with_make_as_default(tmp_path):
    folder = _snntorch_tests()
    # both runs at once: each is a fresh process on its own copy of the folder
    runs = [_start_run(folder, tmp_path / name, make_default)
            for name, make_default in [("atan", False), ("make", True)]]
    atan, made = [_finish_run(*run) for run in runs]
    assert made["default_spike_grad"] == "LocalZO"
    assert atan["default_spike_grad"] != "LocalZO"
    passed = sorted(i for i, (outcome, _) in atan["outcomes"].items() if outcome == "passed")
    assert len(passed) > 50, atan  # 0.7.0's folder passes 75, 0.9.1's 113 with snnTorch 1.0
    lost = {i: made["outcomes"].get(i, ["not run", ""]) for i in passed}
    lost = {i: result for i, result in lost.items() if result[0] != "passed"}
    assert not lost, (
        f"{len(lost)} of snnTorch {(folder / 'RELEASE').read_text()}'s tests pass with ATan "
        "but not with make() as the default spike_grad:\n"
        + "\n".join(f"{i}: {outcome}: {line}" for i, (outcome, line) in lost.items()))
