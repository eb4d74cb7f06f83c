"""Triton building blocks shared by every LocalZO kernel.

A code kernel turns ``|u|`` into a *code* (``layout.py``): bit ``i`` is set
when direction ``i`` is active, ``|u| < delta * |z_i|``. An estimate kernel
turns the code back into ``G = coef * sum_{i active} |z_i|**p``,
regenerating ``|z_i|`` from the same Philox stream, or reading them from an
external tensor (the test hook). One byte per neuron and step is all that is
kept between the passes.

Random numbers are addressed by ``(seed, counter)``: an element's counter is
its flat index ``rng_offs`` into the ``[T, n]`` (or ``[n]``) tensor, plus
``group * stride`` for directions ``4 group .. 4 group + 3`` (``stride`` =
the tensor's numel). Counters and pointer offsets are int64, so tensors past
``2**31`` entries index correctly. External magnitudes have the layout
``[samples, *shape]``: direction ``i`` of an element sits at
``i * stride + rng_offs``.

The arithmetic is the reference's (``sampling.estimate``), operation by
operation, so the two agree bit for bit given the same ``|z|``.
"""

from __future__ import annotations

import contextlib
import functools

import torch
import triton
import triton.language as tl

from .. import distributions as D
from ..distributions import TABLE_SIZE, TABLE_XMAX
from . import layout, resets

#: Entries per program of the elementwise kernels.
BLOCK = 1024
#: Neurons per program in kernels that loop over time: small, so that many
#: programs run side by side while each walks its time loop.
SCAN_BLOCK = 128
TABLE_SCALE = (TABLE_SIZE - 1) / TABLE_XMAX

# the layouts, as compile-time constants of the kernels
SAMPLE_MASK: tl.constexpr = tl.constexpr(layout.SAMPLE_MASK)
RESET_BIT: tl.constexpr = tl.constexpr(layout.RESET_BIT)
RESET_FLAG: tl.constexpr = tl.constexpr(layout.RESET_FLAG)
ACTIVE_SLOT: tl.constexpr = tl.constexpr(layout.ACTIVE)
LAST_ACTIVE_SLOT: tl.constexpr = tl.constexpr(layout.LAST_ACTIVE)
# the reset mechanisms (resets.py), which the scan kernels take as RESET
RESET_SUBTRACT: tl.constexpr = tl.constexpr(resets.RESET_SUBTRACT)
RESET_ZERO: tl.constexpr = tl.constexpr(resets.RESET_ZERO)
RESET_NONE: tl.constexpr = tl.constexpr(resets.RESET_NONE)
TABLE_N: tl.constexpr = tl.constexpr(TABLE_SIZE)
TABLE_SCALE_C: tl.constexpr = tl.constexpr(TABLE_SCALE)
# the samplers of the law table (distributions.py), as the kernels switch on them
K_NORMAL: tl.constexpr = tl.constexpr(D.NORMAL.kind)
K_UNIFORM: tl.constexpr = tl.constexpr(D.UNIFORM.kind)
K_EXPONENTIAL: tl.constexpr = tl.constexpr(D.EXPONENTIAL.kind)
K_TABLE: tl.constexpr = tl.constexpr(D.TABLE.kind)
K_LOMAX2: tl.constexpr = tl.constexpr(D.LOMAX2.kind)


def grid(n: int):
    return (triton.cdiv(max(n, 1), BLOCK),)


def scan_grid(n: int):
    return (triton.cdiv(max(n, 1), SCAN_BLOCK),)


#: No fused multiply-add: results must round like PyTorch's separate ops.
LAUNCH = {"enable_fp_fusion": False, "num_warps": 4}


def like(t: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """``t`` with the strides of ``ref`` (a copy only when they differ)."""
    if t.stride() == ref.stride():
        return t
    return torch.empty_like(ref, dtype=t.dtype).copy_(t)


def meter_target(acc: torch.Tensor, total: int, placeholder: torch.Tensor):
    """``(count_ptr, TRACK)`` for a kernel that counts with :func:`count_active`:
    the meter's accumulator, started for a call of ``total`` entries, or a
    placeholder (never written) when ``acc`` is empty (not counting)."""
    if not acc.numel():
        return placeholder, False
    layout.prepare_for_kernel(acc, total)
    return acc, True


@functools.lru_cache(maxsize=64)
def float64_constants(device: torch.device, values: tuple) -> torch.Tensor:
    """A kernel's float64 constants on ``device``, copied there once (a copy
    from the host in every call would wait for the GPU)."""
    return torch.tensor(values, dtype=torch.float64, device=device)


def on_device(t: torch.Tensor):
    """Launches inside this context go to ``t``'s GPU, whatever the current
    device is (a model on ``cuda:1`` without ``torch.cuda.set_device(1)``)."""
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()


# ------------------------------------------------------------------ jit helpers
@triton.jit
def block_offsets(BLOCK: tl.constexpr):
    """This program's block of int64 element offsets (no wrap past 2**31)."""
    return tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)


@triton.jit
def step_offsets(t, n, offs):
    """Offsets of ``offs`` in time step ``t`` of a ``[T, n]`` tensor, in int64
    (``T * n`` may pass 2**31)."""
    return tl.cast(t, tl.int64) * n + offs


@triton.jit
def bf16_rtne(x):
    """float32 ``x`` rounded to the nearest bfloat16 (ties to even), still
    float32. Done on the bits because Triton's interpreter truncates when it
    converts to bfloat16; the result converts exactly on every backend."""
    b = x.to(tl.int32, bitcast=True)
    b = b + (0x7FFF + ((b >> 16) & 1))
    b = b & -65536
    return tl.where(x == x, b.to(tl.float32, bitcast=True), x)  # NaN stays NaN


@triton.jit
def cast(x, DTYPE: tl.constexpr):
    """float32 ``x`` to ``DTYPE`` with round-to-nearest-even, as PyTorch."""
    if DTYPE == tl.bfloat16:
        y = bf16_rtne(x).to(tl.bfloat16)
    else:
        y = x.to(DTYPE)
    return y


@triton.jit
def round_to(x, DTYPE: tl.constexpr):
    """Rounds float32 ``x`` to ``DTYPE`` and back: how PyTorch's elementwise
    ops on float16/bfloat16 round each result."""
    if DTYPE == tl.bfloat16:
        y = bf16_rtne(x)
    elif DTYPE == tl.float16:
        y = x.to(tl.float16).to(tl.float32)
    else:
        y = x
    return y


@triton.jit
def load_param(ptr, DT: tl.constexpr):
    """A neuron parameter (0-d: threshold, graded spike) in float32, rounded
    to ``DT`` as the reference casts it to the input's dtype."""
    return round_to(tl.load(ptr).to(tl.float32), DT)


@triton.jit
def load_beta(beta_ptr, DT: tl.constexpr):
    """``beta`` clamped to [0, 1] and rounded to ``DT``, as the reference's
    ``clamped_beta``."""
    return round_to(tl.minimum(tl.maximum(tl.load(beta_ptr).to(tl.float32), 0.0), 1.0), DT)


@triton.jit
def abs_z(r, kparam, table_ptr, KIND: tl.constexpr):
    """``|z|`` from a standard normal (K_NORMAL) or uniform draw ``r``."""
    if KIND == K_NORMAL:
        a = tl.abs(r) * kparam
    else:
        r = tl.minimum(r, 0.99999994)  # 1 - 2**-24: Philox floats can round up to 1.0
        if KIND == K_UNIFORM:
            a = r * kparam
        elif KIND == K_EXPONENTIAL:
            a = -tl.log(1.0 - r) * kparam
        elif KIND == K_TABLE:
            pos = -tl.log2(1.0 - r) * TABLE_SCALE_C
            pos = tl.minimum(tl.maximum(pos, 0.0), TABLE_N - 1.0)
            i0 = tl.minimum(pos.to(tl.int32), TABLE_N - 2)
            frac = pos - i0.to(tl.float32)
            lo = tl.load(table_ptr + i0)
            hi = tl.load(table_ptr + i0 + 1)
            a = lo + frac * (hi - lo)
        else:  # K_LOMAX2
            s = tl.sqrt(r)
            a = s / (1.0 - s) * kparam
    return a


@triton.jit
def draw4(seed, rng_offs, stride, GROUP: tl.constexpr, KIND: tl.constexpr, EXTERNAL: tl.constexpr):
    """Four independent draws per element for samples 4*GROUP .. 4*GROUP+3, as
    a tuple. With EXTERNAL magnitudes nothing is drawn: the four are
    placeholders that ``sample_abs_z`` does not read."""
    if EXTERNAL:
        r = (rng_offs, rng_offs, rng_offs, rng_offs)
    else:
        o = rng_offs + tl.full([], GROUP, tl.int64) * stride
        if KIND == K_NORMAL:
            r = tl.randn4x(seed, o)
        else:
            r = tl.rand4x(seed, o)
    return r


@triton.jit
def sample_abs_z(
    I: tl.constexpr, r, rng_offs, stride, mask, absz_ptr, table_ptr, kparam,
    KIND: tl.constexpr, EXTERNAL: tl.constexpr,
):
    """``|z_I|`` for each element: drawn from ``r`` or read from ``absz``."""
    if EXTERNAL:
        a = tl.load(absz_ptr + tl.full([], I, tl.int64) * stride + rng_offs, mask=mask, other=1.0).to(tl.float32)
    else:
        a = abs_z(r, kparam, table_ptr, KIND)
    return a


@triton.jit
def code_bit(code, uabs, I: tl.constexpr, a, delta, P: tl.constexpr):
    """``code`` with bit ``I`` set where sample ``I`` is active:
    ``|u| < delta * |z_I|`` (``a = |z_I|``; a term of :func:`fold_samples`)."""
    return code | ((uabs < delta * a).to(tl.int32) << I)


@triton.jit
def grad_term(acc, code, I: tl.constexpr, a, delta, P: tl.constexpr):
    """``acc`` plus sample ``I``'s term ``|z_I|**P`` (``a = |z_I|``, ``P`` 1 or
    -1) where bit ``I`` of ``code`` is set (a term of :func:`fold_samples`)."""
    if P == 1:
        w = a
    else:
        w = tl.math.div_rn(1.0, a)  # IEEE division, as torch's reciprocal
    return acc + tl.where(((code >> I) & 1) != 0, w, 0.0)


@triton.jit
def fold_samples(
    acc, x, TERM: tl.constexpr, rng_offs, stride, mask, seed, absz_ptr, table_ptr, delta, kparam,
    KIND: tl.constexpr, P: tl.constexpr, M: tl.constexpr, EXTERNAL: tl.constexpr,
):
    """``acc`` updated with ``TERM(acc, x, i, |z_i|, delta, P)`` for the samples
    ``i = 0 .. M - 1`` in order; ``|z_i|`` drawn four to a Philox call
    (:func:`draw4`) or read from ``absz``."""
    for g in tl.static_range((M + 3) // 4):
        r = draw4(seed, rng_offs, stride, g, KIND, EXTERNAL)
        for j in tl.static_range(4):
            if 4 * g + j < M:
                a = sample_abs_z(
                    4 * g + j, r[j], rng_offs, stride, mask, absz_ptr, table_ptr, kparam, KIND,
                    EXTERNAL,
                )
                acc = TERM(acc, x, 4 * g + j, a, delta, P)
    return acc


@triton.jit
def zo_code(
    uabs, rng_offs, stride, mask, seed, absz_ptr, table_ptr, delta, kparam,
    KIND: tl.constexpr, M: tl.constexpr, EXTERNAL: tl.constexpr,
):
    """Bit ``i`` set where sample ``i`` is active: ``|u| < delta * |z_i|``."""
    return fold_samples(
        tl.zeros(rng_offs.shape, dtype=tl.int32), uabs, code_bit, rng_offs, stride, mask, seed,
        absz_ptr, table_ptr, delta, kparam, KIND, 1, M, EXTERNAL,  # (code_bit ignores P)
    )


@triton.jit
def zo_grad(
    code, rng_offs, stride, mask, seed, absz_ptr, table_ptr, coef, kparam,
    KIND: tl.constexpr, P: tl.constexpr, M: tl.constexpr, EXTERNAL: tl.constexpr,
):
    """The estimate ``G`` (float32) from the code of the forward pass."""
    acc = fold_samples(
        tl.zeros(rng_offs.shape, dtype=tl.float32), code, grad_term, rng_offs, stride, mask, seed,
        absz_ptr, table_ptr, 0.0, kparam, KIND, P, M, EXTERNAL,  # (grad_term ignores delta)
    )
    return acc * coef


@triton.jit
def zo_estimate(
    uabs, rng_offs, stride, mask, seed, absz_ptr, table_ptr, delta, coef, kparam,
    KIND: tl.constexpr, P: tl.constexpr, M: tl.constexpr, EXTERNAL: tl.constexpr,
):
    """The estimate ``G`` (float32) at ``|u|`` within one kernel: the code,
    then the estimate from it (the Philox draws are recomputed, which costs
    far less than the memory traffic of the kernel)."""
    code = zo_code(
        uabs, rng_offs, stride, mask, seed, absz_ptr, table_ptr, delta, kparam,
        KIND, M, EXTERNAL,
    )
    return zo_grad(
        code, rng_offs, stride, mask, seed, absz_ptr, table_ptr, coef, kparam,
        KIND, P, M, EXTERNAL,
    )


@triton.jit
def count_active(count_ptr, g, mask):
    """Adds the block's non-zero estimates ``g`` to the meter's accumulator at
    ``count_ptr`` (``layout.py``): to the window's count and the last call's."""
    active = tl.sum(((g != 0.0) & mask).to(tl.int32), axis=0).to(tl.int64)
    tl.atomic_add(count_ptr + ACTIVE_SLOT, active)
    tl.atomic_add(count_ptr + LAST_ACTIVE_SLOT, active)
