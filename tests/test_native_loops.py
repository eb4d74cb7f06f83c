"""The native path's C time loops (``_ops/_scan.c``) against its
PyTorch loops, bit for bit, and the output pool's reuse rules.

CI builds the C loops with the package (tox sets
``SNNTORCH_LOCALZO_REQUIRE_C=1``, so a broken build fails here); without a
compiler the package runs the PyTorch loops, which test_sequence.py and
test_neuron_leaky.py compare with snnTorch and the reference."""

import os

import pytest
import torch
from conftest import over_simd_settings

from snntorch_localzo._ops import clib, planner, resets, workspace
from snntorch_localzo._ops.leaky import native
from snntorch_localzo._ops.leaky.reference import LeakyParams
from snntorch_localzo._ops.linear_leaky import native as linear_native

pytestmark = pytest.mark.version_free
needs_c = pytest.mark.skipif(clib._scan is None, reason="the C loops were not built here")


def test_c_loops_are_built_where_ci_requires_them():
    if os.environ.get("SNNTORCH_LOCALZO_REQUIRE_C", "0") in ("", "0"):
        pytest.skip("SNNTORCH_LOCALZO_REQUIRE_C is not set")
    assert clib._scan is not None and clib.use_c(torch.zeros(1))


@pytest.mark.skipif(clib.C_RESETS is None, reason="the C loops were not built here")
def test_c_loops_number_the_resets_as_python():
    """setup.py compiles the numbers of resets.py into the C loops, which export them."""
    assert clib.C_RESETS == (resets.RESET_SUBTRACT, resets.RESET_ZERO, resets.RESET_NONE)


def both(monkeypatch, fn):
    """``fn()`` with the C loops, then with the PyTorch loops."""
    monkeypatch.setattr(clib, "ENABLED", True)
    assert clib.use_c(torch.zeros(1))
    with_c = fn()
    monkeypatch.setattr(clib, "ENABLED", False)
    assert not clib.use_c(torch.zeros(1))
    return with_c, fn()


def same(a, b):
    """Bit for bit, NaN for NaN (a zero's sign may differ: the C loop skips adding zeros)."""
    for p, q in zip(a, b):
        if p is None or q is None:
            assert p is None and q is None
        else:
            assert p.dtype == q.dtype
            torch.testing.assert_close(p, q, rtol=0, atol=0, equal_nan=True)


@needs_c
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("reset", [0, 1, 2])
@pytest.mark.parametrize("steps", [0, 7])
@pytest.mark.parametrize("with_mem0", [False, True])
def test_scan_in_c_equals_torch(monkeypatch, dtype, reset, steps, with_mem0):
    torch.manual_seed(0)
    shape = (steps, 5, 33) if steps else (5, 33)
    x = (torch.randn(shape) * 0.8 + 0.5).to(dtype)
    x.view(-1)[:3] = torch.tensor([float("nan"), float("inf"), -float("inf")], dtype=dtype)
    mem0 = (torch.rand(5, 33) * 2).to(dtype) if with_mem0 else None
    params = LeakyParams(torch.tensor(0.875), torch.tensor(0.75), torch.tensor(1.5), reset)

    def run():
        spk, mem, resets, _ = native.scan(x, mem0, params, steps)
        return spk.clone(), mem.clone(), None if resets is None else resets.clone()

    c, t = both(monkeypatch, run)
    same(c, t)
    assert 0 < c[0].count_nonzero() < c[0].numel()


@needs_c
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("grad_mem", [False, True])
@pytest.mark.parametrize("zero_reset", [False, True])
@pytest.mark.parametrize("sparse", [False, True])
def test_reverse_scan_in_c_equals_torch(monkeypatch, dtype, grad_mem, zero_reset, sparse):
    torch.manual_seed(1)
    shape = (9, 4, 21)
    e = torch.randn(shape, dtype=dtype) * (torch.rand(shape) < 0.1)
    gm = torch.randn(shape, dtype=dtype) if grad_mem else None
    resets = torch.rand(shape) < 0.3 if zero_reset else None
    index = torch.nonzero(e.reshape(-1)).reshape(-1)
    sparse_e = (index, e.reshape(-1)[index]) if sparse else None
    beta = torch.tensor(0.9)

    def run():
        gx, carry = native.reverse_scan(None if sparse else e, gm, resets, beta, dtype, shape,
                                        sparse_e)
        return gx.clone(), carry.clone()

    same(*both(monkeypatch, run))


def _bits(t):
    """The bit patterns of a float tensor (a zero's sign and NaN payloads count)."""
    return t.view(torch.int64 if t.dtype == torch.float64 else torch.int32)


@needs_c
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("zero_reset", [False, True])
@pytest.mark.parametrize("active", [0, 1, 9, 60])
def test_event_reverse_scan_gives_the_bits_of_the_full_sweep(monkeypatch, dtype, zero_reset, active):
    """The reverse scan that runs only the neurons with an active entry at or
    after each step against the sweep over every neuron (the planner's
    threshold forced either way): the same bits, zero signs included, and
    the PyTorch loops' values; no active entry gives zeros."""
    torch.manual_seed(2)
    shape = (9, 4, 21)
    index = torch.randperm(9 * 84)[:active].sort().values
    values = torch.randn(active, dtype=dtype)
    values[:1] = -values[:1].abs()  # a negative value: the carry of its neuron is negative
    resets = torch.rand(shape) < 0.3 if zero_reset else None
    beta = torch.tensor(0.9)

    def run(threshold):
        monkeypatch.setattr(planner, "EVENT_REVERSE_SCAN_MAX_ACTIVE", threshold)
        gx, carry = native.reverse_scan(None, None, resets, beta, dtype, shape, (index, values))
        return gx.clone(), carry.clone()

    events, sweep = run(2.0 ** 62), run(-1.0)
    for a, b in zip(events, sweep):
        assert torch.equal(_bits(a), _bits(b))
    same(*both(monkeypatch, lambda: run(2.0 ** 62)))
    if active == 0:
        assert not events[0].any() and not events[1].any()
    elif active > 1:
        assert events[0].count_nonzero() > active  # the carries reach the earlier steps


@needs_c
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_trace_in_c_equals_torch(monkeypatch, dtype):
    x = (torch.rand(12, 3, 17) < 0.3).to(dtype)
    beta = torch.tensor(0.8)

    def run():
        out1 = torch.empty(5, 3, 17, dtype=dtype)
        out2 = torch.empty(7, 3, 17, dtype=dtype)
        carry = linear_native.trace_chunk(x, beta, 0, 5, None, out1)
        carry = linear_native.trace_chunk(x, beta, 5, 7, carry, out2)
        return out1.clone(), out2.clone(), carry.clone()

    same(*both(monkeypatch, run))


@needs_c
@pytest.mark.parametrize("n", [8, 16, 21])
def test_binary_events_write_no_further_than_their_spare_entries(n):
    """The column list at exactly its capacity, the row's last block of eight
    without a one: the C loop writes at most EVENT_SPARE entries past the
    capacity (a guard region after them stays untouched)."""
    x = torch.zeros(3, n)
    x[0, :5] = 1.0
    x[1, 0] = 1.0  # 6 ones in all; rows 1 and 2 end in blocks of zeros
    capacity = 6
    cols = torch.full((capacity + linear_native.EVENT_SPARE + 16,), -7, dtype=torch.int32)
    row_end = torch.zeros(3, dtype=torch.int64)
    packed = torch.empty(3, n, dtype=torch.uint8)
    ones = clib.c_module().binary_events(x.data_ptr(), packed.data_ptr(), cols.data_ptr(),
                                           row_end.data_ptr(), 3, n, capacity, False)
    assert ones == 6 and cols[:6].tolist() == [0, 1, 2, 3, 4, 0]
    assert (cols[capacity + linear_native.EVENT_SPARE:] == -7).all()


@needs_c
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n", [0, 5, 16, 37, 1000, 2**18 + 37])
@pytest.mark.parametrize("density", [0.0, 0.05, 0.5, 1.0])
def test_compact_equals_nonzero_and_stays_in_its_spare_entries(dtype, n, density):
    """The C compaction lists the non-zero entries as ``torch.nonzero`` does
    (NaN and -0.0 included: NaN is non-zero, -0.0 is zero), with its vector
    lanes and without, on one thread and split over two and three (from
    2**18 entries), and writes at most COMPACT_SPARE entries past the
    last (a guard region after them stays untouched)."""
    module = clib.c_module()
    torch.manual_seed(n)
    g = torch.randn(n, dtype=dtype) * (torch.rand(n) < density)
    if n > 4:
        g[1], g[3] = float("nan"), -0.0
    expected = torch.nonzero(g, as_tuple=True)[0]
    spare = module.COMPACT_SPARE
    def check():
        index, values = clib.compact(g, expected.numel())
        assert torch.equal(index, expected)
        ref = g[expected]
        assert torch.equal(values.isnan(), ref.isnan())
        assert torch.equal(values.nan_to_num(), ref.nan_to_num())
        guard = torch.full((expected.numel() + spare + 8,), -7, dtype=torch.int64)
        vguard = torch.full((expected.numel() + spare + 8,), -7.0, dtype=dtype)
        module.compact(g.data_ptr(), n, guard.data_ptr(), vguard.data_ptr(), dtype == torch.float64)
        assert (guard[expected.numel() + spare:] == -7).all()
        assert (vguard[expected.numel() + spare:] == -7.0).all()

    for _ in over_simd_settings():
        _over_threads(check)


@needs_c
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("make_args", [dict(delta=0.5), dict(delta=0.5, samples=3),
                                       dict(dist="fast_sigmoid"), dict()])
def test_dense_estimate_in_c_equals_torch(monkeypatch, dtype, make_args):
    """The native dense draw's estimate and its non-zero entries (C: one pass,
    then a compaction) against ``sampling.estimate`` and ``torch.nonzero``:
    same indices, same bits (p = +1 and -1, several directions, NaN |u|, |z| = 0)."""
    import snntorch_localzo as localzo
    from snntorch_localzo._ops import sampling

    spec = localzo.make(**make_args).spec
    torch.manual_seed(3)
    uabs = (0.7 * torch.randn(5000, dtype=dtype)).abs()
    uabs[::97] = float("nan")
    absz = torch.randn(spec.samples, 5000, dtype=dtype).abs()
    absz[0, ::89] = 0.0

    def run():
        index, values = sampling.nonzero_estimate(uabs, absz, spec)
        return index, values

    (i_c, v_c), (i_t, v_t) = both(monkeypatch, run)
    assert torch.equal(i_c, i_t) and 0 < i_c.numel() < 5000
    same((v_c,), (v_t,))


def _binary_rows(dtype, n=70):
    """Rows of ``n`` spikes: all zero, all one, one one (first and last
    column), then random ones at 1% to 50%."""
    torch.manual_seed(12)
    rows = [torch.zeros(n), torch.ones(n), torch.eye(n)[0], torch.eye(n)[-1]]
    rows += [(torch.rand(n) < p).float() for p in (0.01, 0.05, 0.2, 0.5) for _ in range(3)]
    return torch.stack(rows).to(dtype)


@needs_c
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_binary_events_list_the_ones_row_by_row(dtype):
    """binary_events: the packed bytes, the number of ones and, within the
    capacity, their columns in ascending order row after row (every width: the
    C loop takes eight bytes at a time)."""
    for n in (1, 7, 8, 9, 70):
        x = _binary_rows(dtype, n).reshape(2, -1, n)
        ev = linear_native.binary_events(x, x.numel())
        rows, cols = torch.nonzero(x.reshape(-1, n), as_tuple=True)
        assert torch.equal(ev.packed, x.to(torch.uint8)) and ev.ones == rows.numel()
        assert torch.equal(ev.cols[:ev.ones], cols.to(torch.int32))
        ends = torch.cumsum(torch.bincount(rows, minlength=x.numel() // n), 0)
        assert torch.equal(ev.row_end, ends)
        # over the capacity: packed and counted, not listed (the planner takes the dense product)
        over = linear_native.binary_events(x, ev.ones - 1, keep=False)
        assert over.ones == ev.ones and torch.equal(over.packed, ev.packed)


@needs_c
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_binary_events_reject_other_values(dtype):
    x = _binary_rows(dtype)
    for value in (0.5, -0.0, 2.0, float("nan"), float("inf")):
        bad = x.clone()
        bad[-1, -1] = value  # in the last row: the loop checks every row before it lists it
        assert linear_native.binary_events(bad, bad.numel()) is None
        assert linear_native.pack_binary(bad) is None
    assert linear_native.binary_events(x.half(), x.numel()) is None  # no C loop for float16


@needs_c
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("out_features", [5, 64, 200])
def test_event_current_equals_the_dense_product(dtype, with_bias, out_features):
    """The sum of the weight columns of the ones against ``F.linear``: equal to
    the rounding of the sum (its order differs), exactly for rows of at most
    one one. Widths below, at and across the C loop's register blocks."""
    x = _binary_rows(dtype).reshape(2, -1, 70)
    w = torch.randn(out_features, 70, dtype=dtype)
    b = torch.randn(out_features, dtype=dtype) if with_bias else None
    w0, b0 = w.clone(), None if b is None else b.clone()
    ev = linear_native.binary_events(x, x.numel())
    out = torch.full((x.numel() // 70, out_features), float("nan"), dtype=dtype)
    linear_native.event_current(ev, w, b, out)
    dense = torch.nn.functional.linear(x, w, b).reshape(out.shape)
    torch.testing.assert_close(out, dense)
    single = [0, 2, 3]  # no one, or one: no sum to round
    assert torch.equal(out[single], dense[single])
    assert torch.equal(w, w0) and (b is None or torch.equal(b, b0))


@needs_c
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("out_features", [5, 16, 37])
def test_event_weight_grad_equals_the_dense_product(dtype, out_features):
    """``h^T @ x`` from the ones of the packed bytes against the product: equal
    to the rounding of the sum (its order differs), exactly for small integer
    ``h`` (every partial sum exact); a row of ``h`` that is all zero adds
    nothing; neither argument changes. Widths below, at and across a vector."""
    torch.manual_seed(0)
    x = _binary_rows(dtype).reshape(2, -1, 70)
    packed = linear_native.pack_binary(x)
    flat_x = x.reshape(-1, 70)
    for h in (torch.randn(*x.shape[:2], out_features, dtype=dtype),
              torch.randint(-4, 5, (*x.shape[:2], out_features)).to(dtype)):
        h[0, 1] = 0.0
        p0, h0 = packed.clone(), h.clone()
        gw = linear_native.event_weight_grad(packed, h)
        dense = h.reshape(-1, out_features).t() @ flat_x
        assert gw.shape == (out_features, 70) and gw.dtype == dtype and gw.is_contiguous()
        torch.testing.assert_close(gw, dense)
        assert torch.equal(packed, p0) and torch.equal(h, h0)
    assert torch.equal(gw, dense)  # the integer h: exact


@needs_c
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("out_features", [5, 16, 37])
def test_sampled_input_grad_in_c_equals_the_product_at_the_entries(monkeypatch, dtype, out_features):
    """The input gradient at the lower layer's active entries: ``(h @ W)`` there
    and zero elsewhere, from the C dot products and from
    ``torch.sparse.sampled_addmm`` (the C loops off); exactly the product for
    small integer values. Dot lengths below, at and across the C loop's 16 lanes."""
    torch.manual_seed(0)
    T, B, IN = 3, 4, 29
    lower = torch.randperm(T * B * IN)[:40].sort().values
    others = torch.ones(T * B * IN, dtype=torch.bool)
    others[lower] = False
    for h, w in ((torch.randn(T, B, out_features, dtype=dtype), torch.randn(out_features, IN, dtype=dtype)),
                 (torch.randint(-4, 5, (T, B, out_features)).to(dtype),
                  torch.randint(-4, 5, (out_features, IN)).to(dtype))):
        w0 = w.clone()
        with_c, without = both(monkeypatch, lambda: linear_native.sparse_input_grad(h, w, lower, dtype).clone())
        product = (h @ w).reshape(-1)
        for dx in (with_c, without):
            flat = dx.reshape(-1)
            assert dx.shape == (T, B, IN) and dx.dtype == dtype
            torch.testing.assert_close(flat[lower], product[lower])
            assert not flat[others].any()
        assert torch.equal(w, w0)
        monkeypatch.setattr(clib, "ENABLED", True)
    assert torch.equal(with_c.reshape(-1)[lower], product[lower])  # the integer values: exact


def _over_threads(fn, counts=(1, 2, 3)):
    """``fn()`` with torch's thread count at each of ``counts``."""
    before = torch.get_num_threads()
    try:
        out = []
        for threads in counts:
            torch.set_num_threads(threads)
            out.append(fn())
        return out
    finally:
        torch.set_num_threads(before)


@needs_c
def test_event_current_splits_rows_over_threads_without_changing_bits():
    """A sum large enough to split its rows over torch's threads (where built
    with OpenMP) gives the same bits for 1, 2 and 3 threads."""
    torch.manual_seed(0)
    x = (torch.rand(4099, 64) < 0.1).float()  # (ones + rows) * 256 columns > 2**20
    w = torch.randn(256, 64)
    b = torch.randn(256)
    ev = linear_native.binary_events(x, x.numel())
    outs = _over_threads(lambda: linear_native.event_current(ev, w, b, torch.empty(4099, 256)).clone())
    assert all(torch.equal(o, outs[0]) for o in outs[1:])
    torch.testing.assert_close(outs[0], torch.nn.functional.linear(x, w, b))


@needs_c
@pytest.mark.parametrize("reset", [0, 1, 2])
def test_sequence_scan_splits_neurons_over_threads_without_changing_bits(monkeypatch, reset):
    """A scan large enough to split its neurons over torch's threads (steps
    times neurons >= 2**18, where built with OpenMP; 1001 neurons: a last
    block shorter than the others) gives the bits of one thread, which are
    the PyTorch loop's, for every output (spikes, membranes, resets and
    ``|mem - thr|``), from a zero and from a given membrane."""
    torch.manual_seed(3)
    T, B, N = 280, 7, 143  # 1001 neurons a step, 280280 entries > 2**18
    x = torch.randn(T, B, N) * 0.8 + 0.5
    x.view(-1)[:2] = torch.tensor([float("nan"), float("inf")])
    params = LeakyParams(torch.tensor(0.875), torch.tensor(0.75), torch.tensor(1.5), reset)
    for mem0 in (None, torch.rand(B, N) * 2):
        def run():
            spk, mem, resets, uabs = native.scan(x, mem0, params, T, want_uabs=True)
            return tuple(None if t is None else t.clone() for t in (spk, mem, resets, uabs))

        runs = _over_threads(run)
        for other in runs[1:]:
            same(runs[0], other)
        monkeypatch.setattr(clib, "ENABLED", False)
        same(runs[0][:3], run()[:3])
        monkeypatch.setattr(clib, "ENABLED", True)


@needs_c
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("case", ["dense", "sparse", "events"])
def test_reverse_scan_splits_neurons_over_threads_without_changing_bits(monkeypatch, dtype, case):
    """A reverse scan large enough to split its neurons over torch's threads
    (steps times neurons >= 2**18; 1001 neurons: a last block shorter than
    the others): the bits of one thread, zero signs included, for a dense
    spike gradient with a membrane gradient and zero resets, a sparse one,
    and a sparse one without membrane gradient on the live neurons only
    (``events``); one thread's are the PyTorch loop's."""
    torch.manual_seed(5)
    shape = (280, 7, 143)
    total = 280 * 1001
    index = torch.randperm(total)[:3000].sort().values
    values = torch.randn(3000, dtype=dtype)
    e = torch.zeros(total, dtype=dtype)
    e[index] = values
    e = e.view(shape)
    gm = torch.randn(shape, dtype=dtype) if case == "dense" else None
    resets = torch.rand(shape) < 0.3
    beta = torch.tensor(0.9)
    monkeypatch.setattr(planner, "EVENT_REVERSE_SCAN_MAX_ACTIVE", 2.0 ** 62 if case == "events" else -1.0)

    def run():
        dense = e if case == "dense" else None
        sparse = None if case == "dense" else (index, values)
        gx, carry = native.reverse_scan(dense, gm, resets, beta, dtype, shape, sparse)
        return gx.clone(), carry.clone()

    runs = _over_threads(run)
    for other in runs[1:]:
        for a, b in zip(runs[0], other):
            assert torch.equal(_bits(a), _bits(b))
    same(*both(monkeypatch, run))


@needs_c
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_sampled_input_grad_splits_entries_over_threads_without_changing_bits(dtype):
    """The sampled input gradient's dot products split over torch's threads
    (entries times outputs >= 2**18): the same bits for 1, 2 and 3 threads,
    zero away from the sampled entries."""
    torch.manual_seed(6)
    T, B, IN, OUT = 20, 16, 300, 256
    h = torch.randn(T, B, OUT, dtype=dtype)
    weight = torch.randn(OUT, IN, dtype=dtype)
    lower = torch.randperm(T * B * IN)[:2000].sort().values  # 2000 * 256 > 2**18
    runs = _over_threads(lambda: linear_native.sparse_input_grad(h, weight, lower, dtype).clone())
    assert all(torch.equal(_bits(r), _bits(runs[0])) for r in runs[1:])
    flat = runs[0].reshape(-1)
    torch.testing.assert_close(flat[lower], (h @ weight).reshape(-1)[lower])
    others = torch.ones(flat.numel(), dtype=torch.bool)
    others[lower] = False
    assert not flat[others].any()


@needs_c
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_transpose_in_c_equals_torch_in_every_lane_setting_and_thread_count(dtype):
    """The C transpose (tiles, AVX lanes in whole 8 x 8 blocks, the rest
    portable) copies every value to its place: shapes with and without whole
    blocks and tiles, one row or column, a size split over threads (rows
    times columns >= 2**18), each lane setting; the input unchanged."""
    torch.manual_seed(8)
    for rows, cols in ((1, 1), (1, 9), (9, 1), (8, 8), (13, 37), (40, 9), (256, 20), (600, 517)):
        t = torch.randn(rows, cols, dtype=dtype)
        before = t.clone()
        for _ in over_simd_settings():
            outs = _over_threads(lambda: linear_native.transpose(t, torch.full((cols, rows), 7.0, dtype=dtype)))
            assert all(torch.equal(o, t.t()) for o in outs)
        assert torch.equal(t, before)
    # a strided or other-dtype source takes torch's copy, the same values
    t = torch.randn(30, 20, dtype=dtype)
    assert torch.equal(linear_native.transpose(t.t(), torch.empty(30, 20, dtype=dtype)), t)
    assert torch.equal(linear_native.transpose(t, torch.empty(20, 30, dtype=torch.float16)), t.t().half())


@needs_c
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_event_weight_grad_splits_columns_over_threads_without_changing_bits(dtype):
    """The event-driven weight gradient splits its input columns over torch's
    threads (rows times columns >= 2**18, blocks of 16 columns: here a split
    inside the 70 columns too): the same bits for 1, 2 and 3 threads, the
    dense product's values to the rounding of the sum."""
    torch.manual_seed(7)
    x = (torch.rand(5, 800, 70) < 0.08).to(dtype)  # 4000 * 70 > 2**18
    h = torch.randn(5, 800, 20, dtype=dtype)
    h[1, 3] = 0.0
    packed = linear_native.pack_binary(x)
    runs = _over_threads(lambda: linear_native.event_weight_grad(packed, h))
    assert all(torch.equal(_bits(r), _bits(runs[0])) for r in runs[1:])
    torch.testing.assert_close(runs[0], h.reshape(-1, 20).t() @ x.reshape(-1, 70))


@needs_c
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_binary_events_split_rows_over_threads_without_changing_the_events(dtype):
    """binary_events large enough to split its rows over torch's threads: the
    same bytes, count, columns and row ends for 1, 2 and 3 threads; over the
    capacity counted and packed; a row holding another value (last row,
    middle row) refused; the column list's guard past its spare entries
    untouched (each thread's last row is listed without spilling into the
    next thread's)."""
    torch.manual_seed(4)
    rows, n = 3001, 90  # rows * n > 2**18
    x = (torch.rand(rows, n) < 0.07).to(dtype)
    x[5] = 0.0
    x[6] = 1.0
    ones = int(x.sum())
    guard = linear_native.EVENT_SPARE + 16

    def run(capacity, data=x):
        cols = torch.full((capacity + guard,), -7, dtype=torch.int32)
        row_end = torch.zeros(rows, dtype=torch.int64)
        packed = torch.empty(rows, n, dtype=torch.uint8)
        count = clib.c_module().binary_events(data.data_ptr(), packed.data_ptr(), cols.data_ptr(),
                                              row_end.data_ptr(), rows, n, capacity, dtype == torch.float64)
        return count, packed, cols, row_end

    r, c = torch.nonzero(x, as_tuple=True)
    for count, packed, cols, row_end in _over_threads(lambda: run(ones)):
        assert count == ones and torch.equal(packed, x.to(torch.uint8))
        assert torch.equal(cols[:ones], c.to(torch.int32))
        assert (cols[ones + linear_native.EVENT_SPARE:] == -7).all()
        assert torch.equal(row_end, torch.cumsum(torch.bincount(r, minlength=rows), 0))
    for count, packed, _, _ in _over_threads(lambda: run(ones - 1)):
        assert count == ones and torch.equal(packed, x.to(torch.uint8))
    for row in (rows // 2, rows - 1):
        bad = x.clone()
        bad[row, 3] = 0.5
        assert all(out[0] == -1 for out in _over_threads(lambda: run(ones, bad)))


@needs_c
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_all_finite_in_c_equals_torch(dtype):
    """The check that sends a weight holding inf or NaN to the dense product."""
    t = torch.randn(37, dtype=dtype)
    t[5] = torch.finfo(dtype).max
    for value, pos in ((None, 0), (float("inf"), 0), (-float("inf"), 36), (float("nan"), 17)):
        u = t.clone()
        if value is not None:
            u[pos] = value
        assert clib.c_module().all_finite(u.data_ptr(), u.numel(), dtype == torch.float64) \
            == bool(torch.isfinite(u).all())


def _pointers(n, held):
    """Storage addresses of ``n`` outputs taken one after the other (each freed
    before the next), outside any assert statement (pytest keeps their values)."""
    out = []
    for _ in range(n):
        t = workspace.output("test", (3, 4), torch.float32)
        out.append(t.untyped_storage().data_ptr())
        del t
    return out


def test_output_pool_reuses_only_what_nobody_holds():
    """A pooled output comes back only when no Python name, view, other tensor
    on its storage or autograd saved tensor holds it."""
    if workspace._BASE is None:
        pytest.skip("this torch cannot count references: no pool")
    workspace.clear()
    y = torch.ones(3, 4, requires_grad=True)
    a = workspace.output("test", (3, 4), torch.float32)  # held by a name
    view = workspace.output("test", (3, 4), torch.float32)[1:]  # held by a view only
    c = workspace.output("test", (3, 4), torch.float32)
    out = c * y  # held by autograd only
    held = {a.untyped_storage().data_ptr(), view.untyped_storage().data_ptr(),
            c.untyped_storage().data_ptr()}
    del c
    taken = _pointers(3, held)
    assert len(held) == 3 and not held & set(taken)
    assert len(set(taken)) == 1  # the pool's fourth tensor, free again after each use
    out.sum().backward()
    del out, view
    pool = {t.untyped_storage().data_ptr()
            for t in workspace._LOCAL.pools[("test", (3, 4), torch.float32)]}
    again = _pointers(2, held)
    assert set(again) <= pool - {a.untyped_storage().data_ptr()}  # recycled, never a
    # a recycled output is a new tensor: nothing of an earlier one's autograd state
    first = workspace.output("test", (3, 4), torch.float32)
    first.requires_grad_(True)
    first.register_hook(lambda g: g * 2)
    first.marked = True
    ptr = first.untyped_storage().data_ptr()
    del first
    second = workspace.output("test", (3, 4), torch.float32)
    assert second.untyped_storage().data_ptr() == ptr
    assert not second.requires_grad and not hasattr(second, "marked") and not second._backward_hooks
    workspace.clear()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
@pytest.mark.parametrize("param_dtype", [torch.float32, torch.float64])
def test_parameter_values_are_the_scalars_as_floats(dtype, param_dtype):
    """``LeakyParams.values`` (the C loops' arguments, the C step's factors,
    read without tensor operations) are the numbers of ``scalars``: beta
    clamped to [0, 1], each rounded to ``dtype``, NaN kept, beyond float32's
    range its infinity."""
    for v in [0.9, 0.95, 1 / 3, 0.1, 1.7, -0.3, 0.0, 1e-45, 3e38, 1e39, -1e39,
              float("inf"), float("nan")]:
        t = torch.tensor(v, dtype=param_dtype)
        params = LeakyParams(t, t.clone(), t.clone().view(1), resets.RESET_SUBTRACT)
        expected = [float(s) for s in params.scalars(dtype)]
        got = params.values(dtype)
        assert all(type(g) is float for g in got)
        assert [str(g) for g in got] == [str(e) for e in expected], (v, got, expected)
