"""Which implementation runs a call: the one place that decides, and holds
every size threshold.

The mode (:mod:`snntorch_localzo._backend`: ``auto``, ``reference``,
``triton``) gives the tensors' device a path (:func:`device_path`); each
operator's planner below then applies the limits of the fused paths (dtypes,
parameters, sizes) once per call, and the autograd glue runs what it says:

==================  ==================================================
path                what runs
==================  ==================================================
``Path.TRITON``     fused Triton kernels (CUDA; CPU in the interpreter)
``Path.NATIVE``     the native CPU path: C time loops and the sparse
                    estimate (only entries that can be active draw);
                    for the spike function one fused C pass (step,
                    draw, estimate)
``Path.REFERENCE``  plain PyTorch, step by step (every other case,
                    and the draws by the incoming gradient,
                    ``spec.weighted``, that neither the C pass nor the
                    kernel covers)
``Path.EXACT``      the spike function's expected value instead of a
                    draw, for the calls whose samples are small enough
                    for the step (``Step.is_exact``: an output layer);
                    a Leaky layer then takes the native path (which
                    gives it too, ``auto`` on the CPU) or the reference,
                    not the kernels
==================  ==================================================

Inside a Linear + Leaky layer four more choices are made here: the
event-driven or the dense input current in forward (:func:`use_event_current`),
the sparse or the dense weight gradient in backward
(:func:`use_sparse_weight_grad`) and, on the CPU, the dense one from the
input's ones or by a product (:func:`use_event_weight_grad`), and the input
gradient sampled at the active entries of the layer below or dense
(:func:`use_sampled_input_grad`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional, Tuple

import torch

from .._backend import Path, device_path, get_backend, interpreting
from .clib import c_module
from .resets import RESET_NONE, RESET_SUBTRACT
from ..step import sample_entries
from .spec import MAX_SAMPLES, ZOSpec

if TYPE_CHECKING:
    from .leaky.reference import LeakyParams

__all__ = [
    "Path", "spike_path", "spike_plan", "leaky_path", "leaky_spec", "weighted_sequence", "leaky_step_is_reference",
    "c_spike_step",
    "linear_leaky_path",
    "use_event_current", "use_sparse_weight_grad", "use_event_weight_grad", "use_event_reverse_scan",
    "use_sampled_input_grad", "NATIVE_MIN_NUMEL", "NATIVE_DENSE_NEAR",
    "EVENT_MAX_DENSITY", "SPARSE_MIN_OUT", "SPARSE_MAX_DENSITY", "SPARSE_MIN_IN", "SPARSE_MAX_ROWS",
    "EVENT_WEIGHT_GRAD_MAX_DENSITY", "EVENT_REVERSE_SCAN_MAX_ACTIVE", "SAMPLED_INPUT_MAX_DENSITY",
]

#: A single Leaky step on the CPU smaller than this takes the reference, whose
#: dense draw costs less there than the native path's bookkeeping: on the
#: development machine's CPU (one thread) the two cross between 2**15 and
#: 2**17 entries. So does a spike call that the fused C backward does not
#: cover (float64, an inverse-CDF table law, no C compiler); the fused one
#: (``spike/native.py``) pays at every size, and a single step it covers
#: takes the reference at every size, the spike function's fused backward
#: included (measured with ``compare.py``'s step loop at hidden 1024, 2**17
#: entries a step: the native step was the slower, ``cpu_scaling.json``).
NATIVE_MIN_NUMEL = 2**17
#: The sparse weight gradient pays off from this many output neurons (CPU: its
#: input trace costs about as much as a dense product with ~100 outputs on the
#: development machine; GPU: narrower layers take one cuBLAS launch).
SPARSE_MIN_OUT = 128
#: CPU: ... and up to this fraction of active entries.
SPARSE_MAX_DENSITY = 0.125
#: GPU: ... from this many input features ...
SPARSE_MIN_IN = 64
#: GPU: ... and up to this many rows ``T * B``: every program walks all rows of
#: its neuron's column of ``e``, one dependent load per block of rows, so the
#: walk, not the arithmetic, sets its time. Not measured on a GPU yet: a review
#: estimated 0.3-1.5 ms for the sparse walk against 0.1-0.5 ms for cuBLAS at
#: ``B = 128, T = 100`` (12800 rows), hence the limit;
#: ``benchmarks/gpu_check.py`` times both sides and records whether this rule
#: picked the faster one.
SPARSE_MAX_ROWS = 8192

#: The native CPU estimate in PyTorch (``sampling.sparse_estimate``: where the
#: fused C pass does not run) draws every entry densely, as the reference does,
#: when more than this fraction of the entries lies near threshold (where the
#: sparse draw must decide them one by one: its bookkeeping per near entry
#: then costs more than a dense draw; measured on the development machine,
#: 819200 entries, one thread: the two cross between about 8% and 20% near).
NATIVE_DENSE_NEAR = 0.15

#: The native Linear + Leaky layer sums the weight rows of the ones of a binary
#: input (the event-driven current, ``_scan.c`` event_sum) instead of the dense
#: product when at most this fraction of its entries are ones. Measured with
#: ``benchmarks/rule_cost.py`` on the development machine (2 shared cores,
#: AVX-512): ``torch.addmm`` against the C pass that checks, packs and lists the
#: ones plus the C sum, ``[T B, in] x [in, 256]`` with in = 256 and 700,
#: ``T B`` = 3200 and 12800, 1% to 50% ones, two runs. With one torch thread
#: they cross at 40-50% ones; with two (the C loops run on one) at 20% for
#: in = 256, ``T B`` = 3200 in one run, the lowest crossing, and at 40% or
#: more elsewhere. Taken below that lowest crossing; at 10% ones the
#: event-driven current was 1.6 to 12 times faster than the product.
EVENT_MAX_DENSITY = 0.15

#: The native Linear + Leaky backward forms a dense weight gradient (the
#: sparse one does not apply or pay) of a binary input kept as bytes from its
#: ones, adding the rows of ``dL/dI`` at them in C (``_scan.c`` event_outer,
#: its input columns split over torch's threads), instead of unpacking the
#: input for the product, when at most this fraction of the input's entries
#: are ones (and ``sparse``: it sums in another order). Measured with
#: ``benchmarks/rule_cost.py`` (``outer`` rows) on the development machine
#: (Intel, 2 cores, AVX-512), out 20, 64 and 256, in 256 and 700, ``T B`` =
#: 3200 and 12800, one and two threads, two runs
#: (``rule_cost_outer_intel_after_run{1,2}.json``): the sum took 0.26-0.85 of
#: the product's time at 5% ones, 0.40-0.98 at 10% except out 20 with two
#: threads (0.61-1.12), and more than the product in 22 of 48 cases at 20%.
#: Taken below the out-20 crossing (the firing benchmark net's output layer
#: reads 7.9% ones).
EVENT_WEIGHT_GRAD_MAX_DENSITY = 0.08

#: The native reverse scan of a Leaky backward whose spike gradient is sparse
#: and whose membrane output is unused zeroes its output and runs only the
#: neurons with an active entry at or after each step (``_scan.c``
#: reverse_scan_events) when the active entries are at most this fraction of
#: the neurons of one step; else it sweeps every neuron at every step (the
#: same bits either way). Measured with ``benchmarks/rule_cost.py``
#: (``reverse`` rows, ``rule_cost_backward_cpu.json``; T = 25 and 100, 32768
#: and 131072 neurons, entries at random): 2.2-6.3x faster up to 1%,
#: 1.2-1.8x at 5%, 0.83-1.43x at 10%, slower beyond.
EVENT_REVERSE_SCAN_MAX_ACTIVE = 0.05

#: CPU: the input gradient of a Linear + Leaky layer is sampled at the active
#: entries of the layer below (``torch.sparse.sampled_addmm``) when at most
#: this fraction of them are active, else one dense product. Measured on the
#: development machine (``[3200, 256] @ [256, in]``, in = 64 and 256, one and
#: two threads, 1% to 40% active): they cross between 12% and 19%.
SAMPLED_INPUT_MAX_DENSITY = 0.1

#: Dtypes of the fused paths.
KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
NATIVE_DTYPES = (torch.float32, torch.float64)


def kernel_supports(spec: ZOSpec, dtype: torch.dtype) -> bool:
    """Whether the Triton kernels handle this spec and dtype (float64 and more
    than ``MAX_SAMPLES`` directions take another path)."""
    return dtype in KERNEL_DTYPES and 1 <= spec.samples <= MAX_SAMPLES


def weighted_kernel_covers(spec: ZOSpec, dtype: torch.dtype) -> bool:
    """Whether the Triton kernel draws a weighted spec's estimate
    (``spike.triton.weighted_bwd_kernel``): the uniform law with one
    direction, float32."""
    from .. import distributions as D

    return type(spec.law) is D.Uniform and spec.samples == 1 and dtype == torch.float32


def spike_path(u: torch.Tensor, spec: ZOSpec) -> Path:
    """The path of the spike function's backward for ``u``."""
    return spike_plan(u, spec)[0]


#: :func:`spike_plan`'s decisions, by (spec, shape, dtype, device, settings).
_SPIKE_PLANS: dict = {}
_SPIKE_PLANS_MAX = 4096


def forget_plans() -> None:
    """Forgets :func:`spike_plan`'s decisions (tests that change what they
    depend on: this module's thresholds, the C loops' presence)."""
    _SPIKE_PLANS.clear()


def spike_plan(u: torch.Tensor, spec: ZOSpec) -> Tuple[Path, bool]:
    """``(path, fused)``: :func:`spike_path` for ``u``, and whether C passes
    run that path's backward: the native path's fused pass
    (:func:`spike.native.fused <snntorch_localzo._ops.spike.native.fused>`),
    or the expected value's (``Path.EXACT``, :func:`spike.native.exact_fused
    <snntorch_localzo._ops.spike.native.exact_fused>`). Decided once per spec,
    shape, dtype, device, mode, Triton interpreter and C switch: every spike
    call of a layer asks again, and the checks cost more than the C pass of a
    small layer."""
    if torch.compiler.is_compiling():  # (shapes may be symbolic there)
        path = _spike_path(u, spec)
        return path, c_passes(u, spec, path)
    mode = get_backend()
    key = (spec, u.shape, u.dtype, u.device, mode, mode == "triton" and interpreting(), c_module() is not None)
    plan = _SPIKE_PLANS.get(key)
    if plan is None:
        if len(_SPIKE_PLANS) >= _SPIKE_PLANS_MAX:
            _SPIKE_PLANS.clear()
        path = _spike_path(u, spec)
        plan = _SPIKE_PLANS[key] = (path, c_passes(u, spec, path))
    return plan


def c_passes(u: torch.Tensor, spec: ZOSpec, path: Path) -> bool:
    """Whether C passes run the spike function's backward on ``path`` (:func:`spike_plan`)."""
    from .spike import native  # (the spike package imports this module)

    if path is Path.EXACT:
        return native.exact_fused(u, spec)
    if spec.weighted:
        return path is Path.NATIVE and native.weighted_fused(u, spec)
    return path is Path.NATIVE and _fused_spike(u, spec)


def _spike_path(u: torch.Tensor, spec: ZOSpec) -> Path:
    if spec.step.is_exact(sample_entries(u.shape)):
        return Path.EXACT
    path = device_path(u)
    if spec.weighted:  # (the C pass or the kernel where it covers the call, else the reference)
        from .spike import native  # (the spike package imports this module)

        if path is Path.NATIVE and native.weighted_fused(u, spec):
            return path
        return path if path is Path.TRITON and weighted_kernel_covers(spec, u.dtype) else Path.REFERENCE
    if path is Path.TRITON and not kernel_supports(spec, u.dtype):
        return Path.REFERENCE if u.is_cuda else Path.NATIVE
    if path is Path.NATIVE and u.numel() < NATIVE_MIN_NUMEL and not _fused_spike(u, spec):
        return Path.REFERENCE
    return path


def _fused_spike(u: torch.Tensor, spec: ZOSpec) -> bool:
    """Whether the spike function's fused C backward covers ``u`` (it pays at
    every size, :mod:`snntorch_localzo._ops.spike.native`)."""
    from .spike import native  # (the spike package imports this module)

    return native.fused(u, spec)


def native_draws_densely(near: int, total: int) -> bool:
    """Whether the native estimate over ``total`` entries, ``near`` of them near
    threshold, draws every entry (``sampling.sparse_estimate_abs``)."""
    return near > NATIVE_DENSE_NEAR * total


def _scalar_params(params: "LeakyParams", x: torch.Tensor, dtypes) -> bool:
    """Scalar, fixed ``beta``/``threshold``/``graded`` of a fused dtype on ``x``'s device."""
    return all(
        p.numel() == 1 and not p.requires_grad and p.dtype in dtypes and p.device == x.device
        for p in (params.beta, params.threshold, params.graded)
    )


def leaky_path(
    x: torch.Tensor, mem: Optional[torch.Tensor], params: "LeakyParams", spec: ZOSpec,
    steps: int = 0, mem_shape: Optional[tuple] = None,
) -> Path:
    """The path of a Leaky step (``steps = 0``) or sequence with input ``x`` and
    state ``mem``: the fused paths need scalar, fixed ``beta``/``threshold``/
    ``graded`` and a state of the input's dtype and device; the kernels also a
    dtype and a number of directions they cover, and a draw: a small layer's
    expected value (``Step.is_exact``) the native path and the reference
    give. On the CPU a single step takes the reference below
    ``NATIVE_MIN_NUMEL`` entries, and at every size where the spike function's
    fused C backward covers it (that reference step is then the faster).

    :param mem_shape: the membrane's shape where it is not ``x``'s (Linear + Leaky)
    """
    spec = leaky_spec(x, spec, steps)
    path = device_path(x)
    if path is Path.REFERENCE or (spec.weighted and not weighted_sequence(x, spec, path, steps)):
        return Path.REFERENCE
    if mem is not None and (mem.dtype != x.dtype or mem.device != x.device):
        return Path.REFERENCE
    if path is Path.TRITON:
        if spec.step.is_exact(sample_entries(x.shape if mem_shape is None else mem_shape, steps)):
            return Path.REFERENCE  # (on the CPU too: the interpreter's tests see what CUDA runs)
        if kernel_supports(spec, x.dtype) and _scalar_params(params, x, (torch.float32,)):
            return path
        path = Path.REFERENCE if x.is_cuda else Path.NATIVE
    if path is Path.NATIVE and _scalar_params(params, x, NATIVE_DTYPES):
        if steps == 0 and (x.numel() < NATIVE_MIN_NUMEL or _fused_spike(x, spec)):
            return Path.REFERENCE
        return path
    return Path.REFERENCE


def leaky_spec(x: torch.Tensor, spec: ZOSpec, steps: int = 0) -> ZOSpec:
    """The spec a Leaky step (``steps = 0``) or sequence on ``x`` runs
    (:meth:`ZOSpec.resolved`): with ``make()``'s ``sampling="auto"`` a step
    draws by the incoming gradient where its spike function's backward
    draws (the reference step, on the CPU and in the reference mode), by the
    law on the Triton path (whose fused step kernel draws in forward; a step
    it does not cover keeps that draw in the reference) and in a sequence
    (which draws in forward)."""
    return spec.resolved(x.dtype, call=steps == 0 and device_path(x) is not Path.TRITON)


def weighted_sequence(x: torch.Tensor, spec: ZOSpec, path: Path, steps: int) -> bool:
    """Whether the native path runs a weighted spec's Leaky sequence
    (``steps > 0``; :mod:`~snntorch_localzo._ops.weighted`): on the CPU where
    the C pass covers it (``spike.native.weighted_fused``), drawing in
    backward from the incoming gradient. Steps, the kernels (whose sequence
    draws in forward) and the other weighted calls take the reference."""
    from .spike import native  # (the spike package imports this module)

    return path is Path.NATIVE and steps > 0 and native.weighted_fused(x, spec)


def leaky_step_is_reference(x: torch.Tensor, spec: ZOSpec) -> bool:
    """Whether a Leaky step (``steps = 0``) on ``x`` takes the reference
    whatever its parameters and state, known without them: where C passes run
    its spike function's backward (:func:`spike_plan`: the native path with
    the fused pass, or the expected value's), :func:`leaky_path` gives the
    step the reference. Memoised with the plan, so a step loop pays for it
    once. A weighted spec (:mod:`~snntorch_localzo._ops.weighted`) takes
    the reference everywhere."""
    spec = leaky_spec(x, spec)
    return spec.weighted or spike_plan(x, spec)[1]


def c_spike_step(x: torch.Tensor, mem: Optional[torch.Tensor], params: "LeakyParams", spec: ZOSpec) -> bool:
    """Whether a Leaky step that :func:`leaky_path` sends to the reference
    runs as one step of the C scan around its spike function's backward
    (``leaky.autograd.CSpikeStep``: the reference step's values and
    gradients, without its tensor operations), and ``localzo.Leaky`` runs it
    rather than snnTorch's forward (which calls the spike function for the
    reset too): where C passes run the spike function's backward
    (:func:`leaky_step_is_reference`; the forward draws nothing), the C loops
    are built, the parameters are scalar and fixed and the state has the
    input's dtype and device (snnTorch's forward promotes another); not while
    ``torch.compile`` traces (the reference's operations then)."""
    return (leaky_step_is_reference(x, spec) and (mem is None or (mem.dtype == x.dtype and mem.device == x.device))
            and _scalar_params(params, x, NATIVE_DTYPES) and x.dtype in NATIVE_DTYPES and x.device.type == "cpu"
            and c_module() is not None and not torch.compiler.is_compiling())


def linear_leaky_path(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor],
    mem: Optional[torch.Tensor],
    params: "LeakyParams",
    spec: ZOSpec,
) -> Path:
    """The path of the Linear + Leaky layer: the Leaky sequence's, when the
    linear parameters share the input's dtype and device."""
    for p in (weight, bias):
        if p is not None and (p.dtype != x.dtype or p.device != x.device):
            return Path.REFERENCE
    return leaky_path(x, mem, params, spec, max(x.shape[0], 1),
                      mem_shape=tuple(x.shape[:-1]) + (weight.shape[0],))


def event_capacity(
    path: Path, x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]
) -> Optional[int]:
    """How many ones a binary input ``x`` (every entry +0 or 1) of a Linear +
    Leaky layer may hold for the event-driven input current: ``EVENT_MAX_DENSITY``
    of its entries. None where that current never runs: off the native path, a
    dtype other than float32/float64 (the same for ``x``, ``weight`` and
    ``bias``), a non-contiguous ``x`` or a capacity of 0."""
    if path is not Path.NATIVE or x.dtype not in NATIVE_DTYPES or not x.is_contiguous():
        return None
    if any(p is not None and p.dtype != x.dtype for p in (weight, bias)):
        return None
    return int(EVENT_MAX_DENSITY * x.numel()) or None


def use_event_current(
    path: Path, x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
    ones: Optional[int],
) -> bool:
    """Whether a Linear + Leaky layer forms its input current from the ones of
    ``x`` (``ones`` of them; None: ``x`` is not binary) instead of the dense
    product: where :func:`event_capacity` allows that many."""
    capacity = event_capacity(path, x, weight, bias)
    return ones is not None and capacity is not None and ones <= capacity


def sparse_weight_grad_fits(
    path: Path, out_features: int, in_features: int, rows: int, active: Optional[int] = None
) -> bool:
    """The size rule of the sparse weight gradient of a layer
    ``in_features -> out_features`` over ``rows = T * B`` rows with ``active``
    active entries (the CPU knows them; the GPU path does not wait for the
    count): whether it is expected to beat the dense product."""
    if out_features < SPARSE_MIN_OUT:
        return False
    if path is Path.TRITON:
        return in_features >= SPARSE_MIN_IN and rows <= SPARSE_MAX_ROWS
    return active is not None and active <= SPARSE_MAX_DENSITY * rows * out_features


def use_event_weight_grad(path: Path, ones: int, total: int) -> bool:
    """Whether a native Linear + Leaky backward forms its dense weight gradient
    from the ``ones`` (-1: unknown, the input is not binary) of its input's
    ``total`` entries (:data:`EVENT_WEIGHT_GRAD_MAX_DENSITY`)."""
    return path is Path.NATIVE and 0 <= ones <= EVENT_WEIGHT_GRAD_MAX_DENSITY * total


def use_event_reverse_scan(active: int, neurons: int) -> bool:
    """Whether a native reverse scan (a sparse spike gradient, no membrane
    gradient) with ``active`` active entries over ``neurons`` neurons a step
    runs only the live neurons (:data:`EVENT_REVERSE_SCAN_MAX_ACTIVE`)."""
    return active <= EVENT_REVERSE_SCAN_MAX_ACTIVE * neurons


def use_sampled_input_grad(active: int, total: int) -> bool:
    """Whether a native Linear + Leaky backward computes its input gradient only
    at the ``active`` of the ``total`` entries of the layer below that have a
    non-zero estimate (:data:`SAMPLED_INPUT_MAX_DENSITY`)."""
    return active <= SAMPLED_INPUT_MAX_DENSITY * total


def use_sparse_weight_grad(
    path: Path, *, sparse: bool, reset: int, grad_spk, grad_mem, out_features: int,
    in_features: int, rows: int, active: Optional[int] = None,
) -> bool:
    """Whether a Linear + Leaky backward takes the sparse weight gradient:
    asked for (``sparse``), valid (subtractive or no reset, a spike gradient
    and no membrane gradient: docs/method.md section 4) and expected to pay
    (:func:`sparse_weight_grad_fits`)."""
    return (
        sparse and grad_mem is None and grad_spk is not None
        and reset in (RESET_SUBTRACT, RESET_NONE)
        and sparse_weight_grad_fits(path, out_features, in_features, rows, active)
    )
