"""Test set-up and helpers shared by the test files.

Triton kernels run through the interpreter when there is no GPU:
``TRITON_INTERPRET`` must be set before any kernel is defined, so it is set
here, before ``snntorch_localzo`` is imported by the tests.
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

import snntorch_localzo  # noqa: E402,F401  (registers snntorch.surrogate.localzo)
from snntorch_localzo import _backend  # noqa: E402
from snntorch_localzo._backend import Path  # noqa: E402

#: The Triton kernels can run here (a GPU, or the interpreter on the CPU).
KERNELS = _backend.kernels_testable()
#: Device the op and neuron tests use.
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
#: ``use_backend`` modes to run the module-level tests in: the reference,
#: ``auto`` (the native path on CPU tensors, the kernels on CUDA) and the
#: kernels through the interpreter.
MODES = ["reference", "auto"] + (["triton"] if KERNELS and DEVICE == "cpu" else [])
#: The settings of the C module's hand-written vector lanes that the tests of
#: the lanes compare (``set_simd(on, avx512)``): every unit the CPU has, AVX2
#: alone (so that a CPU with AVX-512 runs the AVX2 lanes too), none.
SIMD_SETTINGS = [(True, True), (True, False), (False, False)]


def over_simd_settings():
    """Runs the loop it drives under each of :data:`SIMD_SETTINGS` in turn
    (yields the setting after ``set_simd`` took it), then gives the C module
    back the setting it had, also when the loop fails."""
    from snntorch_localzo._ops.clib import c_module

    module = c_module()
    previous = module.set_simd(True)
    try:
        for lanes in SIMD_SETTINGS:
            module.set_simd(*lanes)
            yield lanes
    finally:
        module.set_simd(previous)
#: The fused paths an op test compares with the reference.
FUSED = ([Path.NATIVE] if DEVICE == "cpu" else []) + ([Path.TRITON] if KERNELS else [])
needs_kernels = pytest.mark.skipif(not KERNELS, reason="needs Triton (a GPU or the interpreter)")


@pytest.fixture(autouse=True)
def _fresh_spike_plans():
    """Each test plans its spike calls afresh, and leaves no plan behind: some
    patch what the plans depend on (``planner.spike_plan``)."""
    from snntorch_localzo._ops import planner

    planner.forget_plans()
    yield
    planner.forget_plans()


#: Test files of the developer tools in ``benchmarks/``, which target the
#: current snnTorch alone (tox: once, in its environment).
BENCHMARK_FILES = ("test_benchmarks.py", "test_defaults_benchmark.py")


def _on_kernels(item) -> bool:
    """Whether a test item runs the Triton kernels through the interpreter:
    parametrized with the ``triton`` mode or ``Path.TRITON``."""
    spec = getattr(item, "callspec", None)
    return spec is not None and any(
        value == "triton" or value is Path.TRITON for value in spec.params.values() if isinstance(value, (str, Path))
    )


def pytest_collection_modifyitems(config, items):
    """Marks ``version_free`` (tox runs those once, against the current
    snnTorch) the tests of the benchmark scripts and every test run on the
    Triton kernels: the kernels and their interpreter do not depend on the
    snnTorch version, and each such test has its ``reference`` and ``auto``
    twins, which run the same snnTorch-facing code against every version."""
    for item in items:
        if item.path.name in BENCHMARK_FILES or _on_kernels(item):
            item.add_marker(pytest.mark.version_free)


@pytest.fixture(autouse=True)
def _fresh_snntorch_instances():
    """snnTorch keeps a class-level list of neurons for ``init_hidden``; start
    every test with an empty one so tests do not see each other's neurons."""
    from snntorch._neurons.neurons import SpikingNeuron

    SpikingNeuron.instances = []
    yield
    SpikingNeuron.instances = []


def made_by(tensor, function) -> bool:
    """Whether ``tensor`` comes from the autograd ``function`` (through views)."""
    fn = tensor.grad_fn
    for _ in range(4):
        if fn is None:
            return False
        if isinstance(fn, function._backward_cls):
            return True
        fn = fn.next_functions[0][0] if fn.next_functions else None
    return False


def run_with_grads(fn, inputs, grads):
    """Runs ``fn`` on fresh leaf clones of ``inputs`` (None stays None), back-
    propagates ``grads`` (one per output, None to skip); returns
    ``(outputs, input grads)``."""
    xs = [None if x is None else x.detach().clone().requires_grad_(x.is_floating_point()) for x in inputs]
    outs = fn(*xs)
    outs = outs if isinstance(outs, tuple) else (outs,)
    pairs = [(o, g) for o, g in zip(outs, grads) if g is not None]
    torch.autograd.backward([o for o, _ in pairs], [g for _, g in pairs])
    return outs, [None if x is None else x.grad for x in xs]


def assert_identical(a, b):
    """Two ``run_with_grads`` results agree bit for bit (dtype, shape, values)."""
    for x, y in zip(a[0] + tuple(a[1]), b[0] + tuple(b[1])):
        if x is None or y is None:
            assert x is None and y is None
            continue
        assert x.dtype == y.dtype and x.shape == y.shape
        assert torch.equal(x, y), (x.double() - y.double()).abs().max()


def assert_close(a, b, rtol=1e-5, atol=1e-5):
    """As ``assert_identical`` up to float rounding (sums in another order)."""
    for x, y in zip(a[0] + tuple(a[1]), b[0] + tuple(b[1])):
        if x is None or y is None:
            assert x is None and y is None
            continue
        assert x.dtype == y.dtype and x.shape == y.shape
        torch.testing.assert_close(x, y, rtol=rtol, atol=atol)
