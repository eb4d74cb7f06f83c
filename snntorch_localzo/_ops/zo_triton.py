"""Triton building blocks shared by every LocalZO kernel.

A forward kernel turns ``|u|`` into a *code*: bit ``i`` is set when sample
``i`` is active, ``|u| < delta * |z_i|``. A backward kernel turns the code
back into the estimate ``G = coef * sum_{i active} |z_i|**p`` (``coef =
c / (2 delta m)``), regenerating ``|z_i|`` from the same Philox stream, or
reading them from an external tensor (the test hook). One byte per neuron
and step is all that is kept between the passes.

Random numbers are addressed by ``(seed, counter)``: an element's counter is
its flat index ``rng_offs`` into the ``[T, n]`` (or ``[n]``) tensor, plus
``group * stride`` for samples ``4 group .. 4 group + 3`` (``stride`` = the
tensor's numel). External magnitudes have the layout ``[samples, *shape]``,
so sample ``i`` of an element sits at ``i * stride + rng_offs``.

The arithmetic is the reference's (``_ops/spike/reference.py``), operation by
operation, so the two agree bit for bit given the same ``|z|``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Dict, Tuple

import torch
import triton
import triton.language as tl

from ..distributions import (
    KIND_EXPONENTIAL,
    KIND_LOMAX2,
    KIND_NORMAL,
    KIND_TABLE,
    KIND_UNIFORM,
    TABLE_SIZE,
    TABLE_XMAX,
    Distribution,
)

#: Most directions per neuron a kernel handles (bits of the uint8 code; bit 7
#: is left for the Leaky kernels' reset flag).
MAX_SAMPLES = 7
#: Offsets are int32: ``numel * samples`` must stay below this.
MAX_OFFSET = 2**31 - 1 - 2**20
BLOCK = 1024
#: Neurons per program in kernels that loop over time: smaller, so that more
#: programs run side by side while each walks its time loop.
SCAN_BLOCK = 256
TABLE_SCALE = (TABLE_SIZE - 1) / TABLE_XMAX
#: Bit of the code that stores the reset of the Leaky kernels.
RESET_BIT = 7

_UNIFORM_MAX = 0.99999994  # 1 - 2**-24: Philox floats can round up to 1.0


@dataclass(frozen=True)
class ZOSpec:
    """Host-side constants of one (distribution, samples) pair."""

    kind: int
    p: int
    samples: int
    delta: float
    coef: float
    kparam: float


@functools.lru_cache(maxsize=256)
def zo_spec(dist: Distribution, samples: int) -> ZOSpec:
    return ZOSpec(
        kind=dist.kind,
        p=dist.p,
        samples=samples,
        delta=dist.delta,
        coef=dist.scale / samples,
        kparam=dist.kparam,
    )


def supports(dtype: torch.dtype, numel: int, samples: int) -> bool:
    """Whether the kernels handle this dtype, size and number of directions."""
    return (
        dtype in (torch.float32, torch.float16, torch.bfloat16)
        and 1 <= samples <= MAX_SAMPLES
        and numel * samples <= MAX_OFFSET
    )


_DUMMY: Dict[Tuple[str, int], torch.Tensor] = {}


def table_arg(dist: Distribution, device: torch.device) -> torch.Tensor:
    """The inverse-CDF table on ``device``, or a one-element placeholder."""
    if dist.kind == KIND_TABLE:
        return dist.table(device)
    key = (device.type, device.index)
    if key not in _DUMMY:
        _DUMMY[key] = torch.zeros(1, dtype=torch.float32, device=device)
    return _DUMMY[key]


def new_seed(device: torch.device) -> torch.Tensor:
    """A Philox seed drawn from torch's generator of ``device`` (no host sync).

    ``torch.manual_seed`` therefore fixes every LocalZO draw of the kernels.
    """
    return torch.randint(0, 2**31 - 1, (1,), dtype=torch.int64, device=device)


def like(t: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """``t`` with the strides of ``ref`` (a copy only when they differ)."""
    if t.stride() == ref.stride():
        return t
    return torch.empty_like(ref, dtype=t.dtype).copy_(t)


def _dense(t: torch.Tensor) -> bool:
    if t.is_contiguous():
        return True
    if t.dim() == 4:
        return t.is_contiguous(memory_format=torch.channels_last)
    if t.dim() == 5:
        return t.is_contiguous(memory_format=torch.channels_last_3d)
    return False


def dense_layout(*tensors) -> bool:
    """Whether the tensors share strides and are contiguous in some memory
    format (channels-last included): then a kernel can treat them as flat
    arrays indexed alike."""
    first = tensors[0]
    return _dense(first) and all(t.stride() == first.stride() for t in tensors[1:])


def grid(n: int):
    return (triton.cdiv(max(n, 1), BLOCK),)


def scan_grid(n: int):
    return (triton.cdiv(max(n, 1), SCAN_BLOCK),)


def launch_options(device: torch.device) -> dict:
    """No fused multiply-add: results must round like PyTorch's separate ops."""
    return {"enable_fp_fusion": False, "num_warps": 4}


# ------------------------------------------------------------------ jit helpers
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
def abs_z(
    r,
    kparam,
    table_ptr,
    KIND: tl.constexpr,
    TABLE_N: tl.constexpr,
    TABLE_SCALE_: tl.constexpr,
):
    """``|z|`` from a standard normal (KIND_NORMAL) or uniform draw ``r``."""
    if KIND == 0:  # KIND_NORMAL
        a = tl.abs(r) * kparam
    else:
        r = tl.minimum(r, 0.99999994)
        if KIND == 1:  # KIND_UNIFORM
            a = r * kparam
        elif KIND == 2:  # KIND_EXPONENTIAL
            a = -tl.log(1.0 - r) * kparam
        elif KIND == 3:  # KIND_TABLE
            pos = -tl.log2(1.0 - r) * TABLE_SCALE_
            pos = tl.minimum(tl.maximum(pos, 0.0), TABLE_N - 1.0)
            i0 = tl.minimum(pos.to(tl.int32), TABLE_N - 2)
            frac = pos - i0.to(tl.float32)
            lo = tl.load(table_ptr + i0)
            hi = tl.load(table_ptr + i0 + 1)
            a = lo + frac * (hi - lo)
        else:  # KIND_LOMAX2
            s = tl.sqrt(r)
            a = s / (1.0 - s) * kparam
    return a


@triton.jit
def draw4(seed, rng_offs, stride, GROUP: tl.constexpr, KIND: tl.constexpr):
    """Four independent draws per element for samples 4*GROUP .. 4*GROUP+3."""
    o = rng_offs + GROUP * stride
    if KIND == 0:
        r0, r1, r2, r3 = tl.randn4x(seed, o)
    else:
        r0, r1, r2, r3 = tl.rand4x(seed, o)
    return r0, r1, r2, r3


@triton.jit
def sample_abs_z(
    I: tl.constexpr,
    r,
    rng_offs,
    stride,
    mask,
    absz_ptr,
    table_ptr,
    kparam,
    KIND: tl.constexpr,
    EXTERNAL: tl.constexpr,
    TABLE_N: tl.constexpr,
    TABLE_SCALE_: tl.constexpr,
):
    """``|z_I|`` for each element: drawn from ``r`` or read from ``absz``."""
    if EXTERNAL:
        a = tl.load(absz_ptr + I * stride + rng_offs, mask=mask, other=1.0).to(tl.float32)
    else:
        a = abs_z(r, kparam, table_ptr, KIND, TABLE_N, TABLE_SCALE_)
    return a


@triton.jit
def code_bit(
    code,
    uabs,
    I: tl.constexpr,
    r,
    rng_offs,
    stride,
    mask,
    absz_ptr,
    table_ptr,
    delta,
    kparam,
    KIND: tl.constexpr,
    M: tl.constexpr,
    EXTERNAL: tl.constexpr,
    TABLE_N: tl.constexpr,
    TABLE_SCALE_: tl.constexpr,
):
    if I < M:
        a = sample_abs_z(
            I, r, rng_offs, stride, mask, absz_ptr, table_ptr, kparam, KIND, EXTERNAL, TABLE_N, TABLE_SCALE_
        )
        code = code | ((uabs < delta * a).to(tl.int32) << I)
    return code


@triton.jit
def zo_code(
    uabs,
    rng_offs,
    stride,
    mask,
    seed,
    absz_ptr,
    table_ptr,
    delta,
    kparam,
    KIND: tl.constexpr,
    M: tl.constexpr,
    EXTERNAL: tl.constexpr,
    TABLE_N: tl.constexpr,
    TABLE_SCALE_: tl.constexpr,
):
    """Bit ``i`` set where sample ``i`` is active: ``|u| < delta * |z_i|``."""
    code = tl.zeros(rng_offs.shape, dtype=tl.int32)
    for g in tl.static_range((M + 3) // 4):
        if EXTERNAL:
            r0 = uabs
            r1 = uabs
            r2 = uabs
            r3 = uabs
        else:
            r0, r1, r2, r3 = draw4(seed, rng_offs, stride, g, KIND)
        code = code_bit(code, uabs, 4 * g + 0, r0, rng_offs, stride, mask, absz_ptr, table_ptr, delta, kparam, KIND, M, EXTERNAL, TABLE_N, TABLE_SCALE_)  # noqa: E501
        code = code_bit(code, uabs, 4 * g + 1, r1, rng_offs, stride, mask, absz_ptr, table_ptr, delta, kparam, KIND, M, EXTERNAL, TABLE_N, TABLE_SCALE_)  # noqa: E501
        code = code_bit(code, uabs, 4 * g + 2, r2, rng_offs, stride, mask, absz_ptr, table_ptr, delta, kparam, KIND, M, EXTERNAL, TABLE_N, TABLE_SCALE_)  # noqa: E501
        code = code_bit(code, uabs, 4 * g + 3, r3, rng_offs, stride, mask, absz_ptr, table_ptr, delta, kparam, KIND, M, EXTERNAL, TABLE_N, TABLE_SCALE_)  # noqa: E501
    return code


@triton.jit
def grad_term(
    acc,
    code,
    I: tl.constexpr,
    r,
    rng_offs,
    stride,
    mask,
    absz_ptr,
    table_ptr,
    kparam,
    KIND: tl.constexpr,
    P: tl.constexpr,
    M: tl.constexpr,
    EXTERNAL: tl.constexpr,
    TABLE_N: tl.constexpr,
    TABLE_SCALE_: tl.constexpr,
):
    if I < M:
        a = sample_abs_z(
            I, r, rng_offs, stride, mask, absz_ptr, table_ptr, kparam, KIND, EXTERNAL, TABLE_N, TABLE_SCALE_
        )
        if P == 1:
            w = a
        else:
            w = tl.math.div_rn(1.0, a)  # IEEE division, as torch's reciprocal
        acc = acc + tl.where(((code >> I) & 1) != 0, w, 0.0)
    return acc


@triton.jit
def zo_grad(
    code,
    rng_offs,
    stride,
    mask,
    seed,
    absz_ptr,
    table_ptr,
    coef,
    kparam,
    KIND: tl.constexpr,
    P: tl.constexpr,
    M: tl.constexpr,
    EXTERNAL: tl.constexpr,
    TABLE_N: tl.constexpr,
    TABLE_SCALE_: tl.constexpr,
):
    """The estimate ``G`` (float32) from the code of the forward pass."""
    acc = tl.zeros(rng_offs.shape, dtype=tl.float32)
    for g in tl.static_range((M + 3) // 4):
        if EXTERNAL:
            r0 = acc
            r1 = acc
            r2 = acc
            r3 = acc
        else:
            r0, r1, r2, r3 = draw4(seed, rng_offs, stride, g, KIND)
        acc = grad_term(acc, code, 4 * g + 0, r0, rng_offs, stride, mask, absz_ptr, table_ptr, kparam, KIND, P, M, EXTERNAL, TABLE_N, TABLE_SCALE_)  # noqa: E501
        acc = grad_term(acc, code, 4 * g + 1, r1, rng_offs, stride, mask, absz_ptr, table_ptr, kparam, KIND, P, M, EXTERNAL, TABLE_N, TABLE_SCALE_)  # noqa: E501
        acc = grad_term(acc, code, 4 * g + 2, r2, rng_offs, stride, mask, absz_ptr, table_ptr, kparam, KIND, P, M, EXTERNAL, TABLE_N, TABLE_SCALE_)  # noqa: E501
        acc = grad_term(acc, code, 4 * g + 3, r3, rng_offs, stride, mask, absz_ptr, table_ptr, kparam, KIND, P, M, EXTERNAL, TABLE_N, TABLE_SCALE_)  # noqa: E501
    return acc * coef


@triton.jit
def zo_estimate(
    uabs,
    rng_offs,
    stride,
    mask,
    seed,
    absz_ptr,
    table_ptr,
    delta,
    coef,
    kparam,
    KIND: tl.constexpr,
    P: tl.constexpr,
    M: tl.constexpr,
    EXTERNAL: tl.constexpr,
    TABLE_N: tl.constexpr,
    TABLE_SCALE_: tl.constexpr,
):
    """The estimate ``G`` (float32) at ``|u|`` within one kernel: the code,
    then the estimate from it (the Philox draws are recomputed, which costs
    far less than the memory traffic of the kernel)."""
    code = zo_code(
        uabs, rng_offs, stride, mask, seed, absz_ptr, table_ptr, delta, kparam,
        KIND, M, EXTERNAL, TABLE_N, TABLE_SCALE_,
    )
    return zo_grad(
        code, rng_offs, stride, mask, seed, absz_ptr, table_ptr, coef, kparam,
        KIND, P, M, EXTERNAL, TABLE_N, TABLE_SCALE_,
    )


assert (KIND_NORMAL, KIND_UNIFORM, KIND_EXPONENTIAL, KIND_TABLE, KIND_LOMAX2) == (0, 1, 2, 3, 4)
