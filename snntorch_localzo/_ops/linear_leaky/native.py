"""Native CPU path of the Linear + Leaky sequence layer.

Forward: the input current of all steps. A spike input (every entry +0 or 1)
with at most ``planner.EVENT_MAX_DENSITY`` ones takes the event-driven
current: one C pass checks it, packs it to a byte per entry for backward and
lists its ones row by row, and a C loop sums the rows of ``W^T`` of those ones
(the dense product's value to the rounding of that sum). Otherwise one dense
product.

Backward: with ``e = G * dL/dS`` non-zero only at the active entries (a few percent),
subtractive or no reset, a scalar beta and the membrane output unused:

* **weight gradient** ``dW = E^T @ trace`` with ``E`` the sparse ``[T B, out]``
  matrix of ``e`` and the input trace ``trace[t] = beta trace[t-1] + x[t]``
  (docs/method.md section 4): a sparse-dense product instead of the dense
  ``[out, T B] @ [T B, in]`` one, with the trace built chunk by chunk in time;
* **bias gradient** ``db[j] = sum over active (t, b, j) of e * c[t]``,
  ``c[t] = beta c[t-1] + 1`` (the trace of ones; in the weight gradient's C
  pass, along its entries, where both are needed);
* **input gradient** at the active entries of the layer below only (when it
  is a native LocalZO sequence layer whose spikes come in unchanged and few
  enough of its entries are active: ``planner.use_sampled_input_grad``): the
  dot products ``(h @ W)`` at those entries in one C pass, ``h = dL/dI``.

Where the weight gradient must be dense (a narrow layer, many active entries)
and the input is spikes with few ones (``planner.use_event_weight_grad``),
``h^T @ x`` is the sum of the rows of ``h`` at the ones, read from the packed
bytes. Elsewhere, the dense products. The sparse sums run in another order
than the dense ones: they agree to float32 rounding (with ``sparse=False``
the backward keeps the dense products, the reference's bits).
"""

from __future__ import annotations

import warnings
from typing import List, NamedTuple, Optional, Tuple

import torch
import torch.nn.functional as F

from .. import oplib
from ..workspace import output, scratch
from ..clib import C_DTYPES, c_module, use_c
from ..leaky import native as leaky_native
from ..leaky.reference import clamped_beta
from ..planner import (
    Path, event_capacity, use_event_current, use_event_weight_grad, use_sampled_input_grad, use_sparse_weight_grad,
)
from ..resets import RESET_ZERO
from ..sampling import compute_dtype
from .reference import input_trace, trace_chunk_steps


class SpikeEvents(NamedTuple):
    """A binary input (every entry +0 or 1) as :func:`binary_events` found it."""

    #: one byte per entry, ``x.to(dtype)`` gives the same bits back
    packed: torch.Tensor
    #: the number of ones
    ones: int
    #: int32: the column of every one, row after row, ascending in each row
    #: (a scratch tensor; meaningful where the capacity held them all)
    cols: Optional[torch.Tensor]
    #: int64 ``[rows]``: where each row's columns end in ``cols``
    row_end: Optional[torch.Tensor]


#: Entries of the column list past its capacity that the C loop may write:
#: it writes eight columns at a time, from at most the capacity on.
EVENT_SPARE = 8


def binary_events(x: torch.Tensor, capacity: int, keep: bool = True) -> Optional[SpikeEvents]:
    """``x`` (rows of ``x.shape[-1]`` entries) as bytes and events when every
    entry is +0 or 1 (spikes, as most inputs of a Linear + Leaky layer), else
    None; None also where the C loops do not run. One C pass that stops at the
    end of the first row holding another value.

    :param capacity: list the columns of the ones where there are at most this
        many (0: pack only)
    :param keep: the packed copy is kept (for backward); else a scratch tensor
    """
    if not use_c(x) or torch.compiler.is_compiling():
        return None
    x = x.contiguous()
    n = x.shape[-1] if x.dim() else 1
    rows = x.numel() // n if n else 0
    packed = torch.empty(x.shape, dtype=torch.uint8) if keep else scratch("x_packed", x.shape, torch.uint8)
    cols = row_end = None
    if capacity > 0:  # the C loop writes up to 8 entries past the last one (EVENT_SPARE)
        cols = scratch("event_cols", (capacity + EVENT_SPARE,), torch.int32)
        row_end = scratch("event_row_end", (rows,), torch.int64)
    ones = c_module().binary_events(
        x.data_ptr(), packed.data_ptr(), _ptr(cols), _ptr(row_end), rows, n, capacity,
        x.dtype == torch.float64,
    )
    if ones < 0:
        return None
    return SpikeEvents(packed, ones, cols, row_end)


def pack_binary(x: torch.Tensor) -> Optional[torch.Tensor]:
    """``x`` as one byte per entry (uint8) when every entry is +0 or 1 (spikes,
    as a layer keeps its input for backward: a quarter of float32's memory;
    ``x.to(dtype)`` gives the same bits back), else None; None where the C
    loops do not run."""
    events = binary_events(x, 0)
    return None if events is None else events.packed


def event_current(events: SpikeEvents, weight: torch.Tensor, bias: Optional[torch.Tensor],
                  out: torch.Tensor) -> torch.Tensor:
    """The input current of a binary input from its ones (the event-driven
    ``F.linear``) into ``out [rows, out_features]``: ``out[r] = sum of W[:, j]
    over the ones (r, j), in ascending j, + b``, one contiguous row of
    ``W^T`` per one. Equals the dense product to the rounding of the sum."""
    wt = transpose(weight, scratch("weight_t", weight.shape[::-1], weight.dtype))
    b = None if bias is None else bias.contiguous()
    c_module().event_sum(
        events.cols.data_ptr(), events.row_end.data_ptr(), wt.data_ptr(), _ptr(b), out.data_ptr(),
        out.shape[0], out.shape[1], out.dtype == torch.float64,
    )
    return out


def linear(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
           events: Optional[SpikeEvents] = None) -> torch.Tensor:
    """``F.linear`` over all steps into a scratch tensor (the input current is
    only read by the scan that follows): from the ones of a binary ``x``
    (``events``) where the planner says so (:func:`use_event_current`), else
    one dense product."""
    if torch.compiler.is_compiling():
        return F.linear(x, weight, bias)
    T, B, IN = x.shape
    out = scratch("cur", (T * B, weight.shape[0]), x.dtype)
    ones = None if events is None else events.ones
    if use_event_current(Path.NATIVE, x, weight, bias, ones) and _finite(weight):
        event_current(events, weight, bias, out)
    elif bias is None:
        torch.mm(x.reshape(T * B, IN), weight.t(), out=out)
    else:
        torch.addmm(bias, x.reshape(T * B, IN), weight.t(), out=out)
    return out.view(T, B, weight.shape[0])


def input_current(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
                  keep_packed: bool) -> Tuple[torch.Tensor, Optional[torch.Tensor], int]:
    """``(cur, packed, ones)``: the input current of all steps (:func:`linear`)
    and, when ``keep_packed`` and ``x`` is binary, ``x`` as bytes for backward
    (:func:`pack_binary`) and its number of ones (else None and -1), all
    from one pass over ``x``."""
    capacity = event_capacity(Path.NATIVE, x, weight, bias) or 0
    events = binary_events(x, capacity, keep_packed) if capacity or keep_packed else None
    cur = linear(x, weight, bias, events)
    if not keep_packed or events is None:
        return cur, None, -1
    return cur, events.packed, events.ones


def unpack_binary(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The input :func:`pack_binary` kept (``x`` itself when it was not packed),
    in ``dtype``: a scratch tensor, valid during the backward that asks
    (a new one at every step would fault its pages in again). Only the dense
    products need it: the sparse weight gradient reads the bytes."""
    if x.dtype == dtype:
        return x
    return scratch("x_unpacked", x.shape, dtype).copy_(x)


def transpose(t: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """``out`` (contiguous, ``[cols, rows]``) filled with the 2-D ``t`` transposed,
    in ``out``'s dtype: one C pass (tiles; AVX lanes where the CPU has them:
    3-4x torch's strided copy at ``[256, 700]`` on the development machine)
    where the C loops run and the dtypes agree, else torch's copy. The same
    values either way."""
    if t.dtype == out.dtype and use_c(t) and out.is_contiguous():
        t = t.contiguous()
        c_module().transpose(t.data_ptr(), out.data_ptr(), t.shape[0], t.shape[1], t.dtype == torch.float64)
        return out
    return out.copy_(t.t())


def _ptr(t: Optional[torch.Tensor]) -> int:
    return 0 if t is None else t.data_ptr()


def _finite(t: torch.Tensor) -> bool:
    """Whether every entry of the float32/float64 ``t`` is finite (one C pass:
    torch's reduction would wait for its threads). The event-driven current
    skips the zeros of the input, where the dense product spreads
    ``0 * inf = NaN``."""
    t = t.contiguous()
    return c_module().all_finite(t.data_ptr(), t.numel(), t.dtype == torch.float64)


def _csr(crow, col, values, size):
    """A CSR matrix built without checks (the indices come from ``nonzero``) and
    without torch's "beta feature" warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(crow, col, values, size=size, check_invariants=False)


def _row_pointers(rows: torch.Tensor, n: int) -> torch.Tensor:
    """CSR row pointers of an ``n``-row matrix from the sorted row index of
    each of its entries."""
    crow = torch.zeros(n + 1, dtype=torch.int64)
    crow[1:] = torch.cumsum(torch.bincount(rows, minlength=n), 0)
    return crow


def trace_chunk(x: torch.Tensor, beta: torch.Tensor, t0: int, steps: int,
                carry: Optional[torch.Tensor], out: torch.Tensor) -> torch.Tensor:
    """Writes the input trace of steps ``[t0, t0 + steps)`` into ``out`` (the
    reference's ``input_trace``; its C loop where it runs) and returns the
    carry for the next chunk, a tensor of its own."""
    if use_c(x, out):
        xc = x.contiguous()
        carry = torch.zeros(x.shape[1:], dtype=out.dtype) if carry is None else carry
        b = clamped_beta(beta, x.dtype).to(out.dtype)
        c_module().trace(xc.data_ptr(), out.data_ptr(), carry.data_ptr(), t0, steps,
                         carry.numel(), float(b), out.dtype == torch.float64)
        return carry
    input_trace(x, beta, t0, steps, None if carry is None else carry.clone(), out)
    return out[-1].clone()


def _trace_grad(x: torch.Tensor, index: torch.Tensor, e_active: torch.Tensor, beta: torch.Tensor,
                out_features: int, dtype: torch.dtype, bias: bool,
                ) -> Optional[Tuple[torch.Tensor, Optional[torch.Tensor]]]:
    """``(dW, db)`` from the C pass that advances the input trace step by step
    (never held whole; ``db``, with ``bias``, from the trace of ones in the
    same pass: :func:`sparse_bias_grad`'s bits), or None where it does not
    run. ``index`` is not empty."""
    T, B, IN = x.shape
    cdtype = compute_dtype(dtype)
    packed = x.dtype == torch.uint8
    if not (c_module() is not None and cdtype in C_DTYPES and (packed or x.dtype == cdtype)
            and index.dtype == torch.int64 and IN > 0):
        return None
    dw = torch.zeros(out_features, IN, dtype=cdtype)
    db = torch.zeros(out_features, dtype=cdtype) if bias else None
    xc = x.contiguous()
    idx = index.contiguous()
    e = e_active.to(dw.dtype).contiguous()
    b = float(clamped_beta(beta, dtype).to(dw.dtype))
    c_module().trace_grad(xc.data_ptr(), T, B, IN, b, idx.data_ptr(), e.data_ptr(), idx.numel(), out_features,
                          dw.data_ptr(), dw.dtype == torch.float64, int(packed), _ptr(db))
    return dw, db


def sparse_weight_grad(
    x: torch.Tensor, index: torch.Tensor, e_active: torch.Tensor, beta: torch.Tensor, out_features: int,
    dtype: Optional[torch.dtype] = None,
) -> torch.Tensor:
    """``dW`` (float32, float64 for a float64 input; ``[out, in]``) from the active entries (flat ``index`` into
    ``[T, B, out]``, values ``e_active``) and the input trace of ``x [T, B, in]``: the input itself, or
    the bytes :func:`pack_binary` kept of it, ``dtype`` then its own dtype (the C pass reads the bytes)."""
    dtype = x.dtype if dtype is None else dtype
    T, B, IN = x.shape
    if index.numel() == 0:
        return torch.zeros(out_features, IN, dtype=compute_dtype(dtype))
    grads = _trace_grad(x, index, e_active, beta, out_features, dtype, False)
    if grads is not None:
        return grads[0]
    dw = torch.zeros(out_features, IN, dtype=compute_dtype(dtype))
    x = unpack_binary(x, dtype)
    rows = index // out_features  # t * B + b
    cols = index % out_features
    chunk = trace_chunk_steps(T, B, IN, dw.dtype)  # the trace is in dw's dtype
    carry = None
    bounds = torch.searchsorted(rows, torch.arange(0, T + chunk, chunk).clamp(max=T) * B)
    for ci, t0 in enumerate(range(0, T, chunk)):
        steps = min(chunk, T - t0)
        lo, hi = int(bounds[ci]), int(bounds[ci + 1])
        out = scratch("trace", (steps,) + tuple(x.shape[1:]), dw.dtype)
        carry = trace_chunk(x, beta, t0, steps, carry, out)
        if hi == lo:
            continue
        j, order = torch.sort(cols[lo:hi], stable=True)
        mat = _csr(_row_pointers(j, out_features), rows[lo:hi][order] - t0 * B,
                   e_active[lo:hi][order].to(dw.dtype), (out_features, steps * B))
        dw += mat @ out.reshape(steps * B, IN)
    return dw


def sparse_bias_grad(
    index: torch.Tensor, e_active: torch.Tensor, beta: torch.Tensor, shape, dtype: torch.dtype
) -> torch.Tensor:
    """``db`` from the active entries: ``sum e * c[t]``, ``c`` the trace of ones."""
    T, B, OUT = shape
    if index.numel() == 0:
        return torch.zeros(OUT, dtype=compute_dtype(dtype))
    ones = torch.ones(T, 1, dtype=dtype)
    c = torch.empty(T, 1, dtype=compute_dtype(dtype))
    trace_chunk(ones, beta, 0, T, None, c)  # (its C loop: one call, not T tensor operations)
    c = c.reshape(T)
    t = index // (B * OUT)
    db = torch.zeros(OUT, dtype=c.dtype)
    db.index_add_(0, index % OUT, e_active.to(c.dtype) * c[t])
    return db


def sparse_grads(
    x: torch.Tensor, index: torch.Tensor, e_active: torch.Tensor, beta: torch.Tensor, shape, dtype: torch.dtype,
    need_w: bool, need_b: bool,
) -> Tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
    """``(dW, db)`` (None where not needed) of :func:`sparse_weight_grad` and
    :func:`sparse_bias_grad`, both from the C trace pass where it runs (the
    bias's sums ride along its entries) and both are needed."""
    T, B, OUT = shape
    if need_w and need_b and index.numel():
        grads = _trace_grad(x, index, e_active, beta, OUT, dtype, True)
        if grads is not None:
            return grads
    return (sparse_weight_grad(x, index, e_active, beta, OUT, dtype) if need_w else None,
            sparse_bias_grad(index, e_active, beta, shape, dtype) if need_b else None)


def event_weight_grad(packed: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """``dW = h^T @ x [out, in]`` for a binary input kept as bytes (``packed``
    ``[T, B, in]``, :func:`pack_binary`), ``h = dL/dI [T, B, out]``: the rows
    of ``h`` summed at the ones of ``x`` in C (``_scan.c`` event_outer; the
    C loops must run), the dense product's value to the rounding of the sum,
    without unpacking ``x``."""
    T, B, IN = packed.shape
    OUT = h.shape[-1]
    h = h.contiguous()
    gt = torch.zeros(IN, OUT, dtype=h.dtype)
    packed = packed.contiguous()  # (held while the pass reads it)
    c_module().event_outer(packed.data_ptr(), h.data_ptr(), gt.data_ptr(), T * B, IN,
                           OUT, h.dtype == torch.float64)
    return transpose(gt, torch.empty(OUT, IN, dtype=gt.dtype))


def sparse_input_grad(
    h: torch.Tensor, weight: torch.Tensor, lower: torch.Tensor, dtype: torch.dtype
) -> torch.Tensor:
    """``dL/dx`` at the flat positions ``lower`` of ``[T, B, in]`` (sorted), zero
    elsewhere: ``(h @ W)`` sampled there (one C pass of dot products where the
    C loops run, else ``torch.sparse.sampled_addmm``). ``h``: ``dL/dI [T, B, out]``."""
    T, B, OUT = h.shape
    IN = weight.shape[1]
    dx = output("grad_input", (T, B, IN), dtype).zero_()
    if lower.numel() == 0:
        return dx
    if h.dtype == dtype and use_c(dx, h, weight) and lower.dtype == torch.int64:
        h = h.contiguous()
        wt = transpose(weight, scratch("weight_t", (IN, OUT), dtype))
        lower = lower.contiguous()  # (held while the pass reads it)
        c_module().sampled_dot(lower.data_ptr(), lower.numel(), h.data_ptr(),
                               wt.data_ptr(), dx.data_ptr(), IN, OUT, dtype == torch.float64)
        return dx
    pattern = _csr(_row_pointers(lower // IN, T * B), lower % IN,
                   torch.zeros(lower.numel(), dtype=h.dtype), (T * B, IN))
    values = torch.sparse.sampled_addmm(pattern, h.reshape(T * B, OUT), weight.to(h.dtype)).values()
    dx.view(-1)[lower] = values.to(dtype)
    return dx


def _backward(
    grad_spk: Optional[torch.Tensor], grad_mem: Optional[torch.Tensor], x: torch.Tensor,
    weight: torch.Tensor, index: torch.Tensor, g: torch.Tensor, resets: torch.Tensor,
    beta: torch.Tensor, graded: torch.Tensor, lower: Optional[torch.Tensor], acc: torch.Tensor,
    *, reset: int, sparse: bool, needs: List[bool], x_dtype: torch.dtype, x_ones: int = -1,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(grad_x, grad_w, grad_b, grad_mem0)`` (empty where ``needs`` is False:
    ``[x, weight, bias, mem0]``). ``x``: the input, or the bytes
    :func:`pack_binary` kept of it; ``x_dtype``: the input's own dtype;
    ``x_ones``: the number of ones of the bytes (-1: not packed)."""
    T, B, _ = x.shape
    OUT = weight.shape[0]
    shape = (T, B, OUT)
    need_x, need_w, need_b, need_m = needs
    # the sums over the active entries only (weight, bias, input gradients) need a finite
    # incoming gradient: elsewhere inf * 0 = NaN spreads, as in the reference's products
    finite = grad_spk is None or leaky_native.finite_sum(grad_spk)
    sparse_w = finite and use_sparse_weight_grad(
        Path.NATIVE, sparse=sparse, reset=reset, grad_spk=grad_spk, grad_mem=grad_mem,
        out_features=OUT, in_features=x.shape[-1], rows=T * B, active=index.numel(),
    )
    need_h = need_x or need_m or ((need_w or need_b) and not sparse_w)
    e, sparse_e, e_active = leaky_native.spike_grads(grad_spk, index, g, graded, acc, for_scan=need_h,
                                                     finite=finite)
    empty = torch.empty(0, dtype=x_dtype)
    h = gmem0 = None
    if need_h:
        h, gmem0 = leaky_native.reverse_scan(
            e, grad_mem, resets if reset == RESET_ZERO else None, beta, x_dtype, shape, sparse_e
        )
    sampled_x = (need_x and lower is not None and x_dtype in (torch.float32, torch.float64)
                 and use_sampled_input_grad(lower.numel(), x.numel()))
    event_w = (need_w and not sparse_w and sparse and x.dtype == torch.uint8 and use_c(h)
               and use_event_weight_grad(Path.NATIVE, x_ones, x.numel()))
    if (sampled_x or event_w) and not leaky_native.finite_sum(h):
        sampled_x = event_w = False  # (a non-finite h takes the products, as the reference)
    gx = gw = gb = empty
    if need_x:
        gx = sparse_input_grad(h, weight, lower, x_dtype) if sampled_x else h @ weight
    if sparse_w and (need_w or need_b):
        gw, gb = sparse_grads(x, index, e_active, beta, shape, x_dtype, need_w, need_b)
        gw = empty if gw is None else gw.to(weight.dtype)
        gb = empty if gb is None else gb.to(x_dtype)
    else:
        if need_w:
            gw = (event_weight_grad(x, h) if event_w
                  else h.reshape(-1, OUT).t() @ unpack_binary(x, x_dtype).reshape(-1, x.shape[-1]))
        if need_b:
            gb = h.sum((0, 1))
    return gx, gw, gb, (gmem0 if need_m else empty)


def _backward_fake(grad_spk, grad_mem, x, weight, index, g, resets, beta, graded, lower, acc, *,
                   reset, sparse, needs, x_dtype, x_ones=-1):
    T, B, IN = x.shape
    OUT = weight.shape[0]
    empty = x.new_empty(0, dtype=x_dtype)
    return (
        x.new_empty(x.shape, dtype=x_dtype) if needs[0] else empty,
        weight.new_empty(weight.shape) if needs[1] else empty,
        x.new_empty(OUT, dtype=x_dtype) if needs[2] else empty,
        x.new_empty(B, OUT, dtype=x_dtype) if needs[3] else empty,
    )


backward = oplib.register("linear_leaky_backward_native", _backward, _backward_fake, mutates=("acc",))
