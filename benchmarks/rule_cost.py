"""What the adaptive step, the native estimate and the native input current
cost on the CPU, side by side.

Three measurements, each in one run, median of ``--repeats``:

* ``order``: the adaptive step's two order statistics of every row (128
  rows; the ranks of 5% and 30%) by the C selection
  (``_ops/order.py``) against two ``torch.kthvalue`` calls, at 20, 256,
  2304 and 6912 values a row;
* ``draw``: the native estimate over 819200 entries at several fractions
  near threshold, the tail-split sparse draw against the dense draw of every
  entry (``sampling.sparse_estimate_abs`` with ``planner.NATIVE_DENSE_NEAR``
  forced to never / always);
* ``current``: the input current of a native Linear + Leaky layer from a
  binary input ``[T B, in]`` (``--tb`` rows; in = 256 and 700, 256 outputs)
  with 1% to 50% ones, the dense product (``torch.addmm``) against the
  event-driven current (``linear_leaky/native.input_current`` with
  ``planner.EVENT_MAX_DENSITY`` forced to always: the C pass that checks,
  packs and lists the ones, then the C sum of weight rows), with torch's
  threads at each of ``--threads``; ``pack_ms`` is the packing pass alone,
  which the dense path runs too when it keeps the input for backward;
* ``outer``: the dense weight gradient ``h^T @ x [out, in]`` of a binary
  input kept as bytes (``T B`` = ``--tb`` rows, in = 256 and 700, out = 20,
  64 and 256, 0% to 40% ones): unpacking the bytes and the product against
  the C sum of the rows of ``h`` at the ones
  (``linear_leaky/native.event_weight_grad``), with torch's threads at each
  of ``--threads``;
* ``reverse``: the reverse scan of a Leaky backward with a sparse spike
  gradient (``T`` = 25 and 100 steps of 32768 and 131072 neurons, active
  entries at random, 0 to 100% of the neurons of one step): every neuron at
  every step against only the live ones (``planner.EVENT_REVERSE_SCAN_MAX_ACTIVE``);
* ``call``: the spike function's forward plus backward per call (autograd
  included), ``make()`` against snnTorch's ATan, at the shapes of the demo's
  hidden and output layers (``[64, 128]``, ``[64, 10]``), tutorial 5's
  hidden layer (``[32, 1000]``), ``compare.py``'s (``[128, 256]``; ``[128, 1024]``
  at ``--hidden 1024``) and
  tutorial 6's two convolutional layers (``[64, 12, 12, 12]``,
  ``[64, 64, 4, 4]``), for
  firing (``N(-0.3, 0.5^2)``) and silent (``N(-0.8, 0.3^2)``) membranes:
  blocks of 200 calls of each in turn, the median block;
* ``sampled``: the input gradient at 0.1% to 10% of the entries of
  ``[T B, 256]`` (out 256; ``linear_leaky/native.sparse_input_grad``, the
  zeroed output included): the C dot products against
  ``torch.sparse.sampled_addmm`` (the C loops off).

``order``, ``draw``, ``reverse``, ``call`` and ``sampled`` run on one thread; ``--what``
picks the measurements (default: all).

    python benchmarks/rule_cost.py --out benchmarks/results/rule_cost_cpu.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch

import snntorch_localzo as localzo
from snntorch_localzo._ops import clib, order, planner, sampling
from snntorch_localzo._ops.linear_leaky import native as linear_native


def median_ms(fn: Callable[[], object], repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def order_rows(repeats: int) -> List[Dict]:
    rows = []
    torch.manual_seed(0)
    for n in (20, 256, 2304, 6912):
        a = (0.3 * torch.randn(128, n) - 0.5).abs()
        k1, k2 = max(round(0.05 * n), 1), max(round(0.3 * n), 1)
        c = median_ms(lambda: order.kth_smallest2(a, k1, k2), repeats)
        t = median_ms(lambda: (a.kthvalue(k1, 1), a.kthvalue(k2, 1)), repeats)
        rows.append({"what": "order", "rows": 128, "n": n, "c_ms": c, "kthvalue_ms": t,
                     "speedup": t / c})
    return rows


def draw_rows(repeats: int) -> List[Dict]:
    rows = []
    spec = localzo.make(delta=1.0).spec
    table = spec.table("cpu")
    torch.manual_seed(0)
    saved = planner.NATIVE_DENSE_NEAR
    try:
        for scale in (0.3, 1.0, 3.0, 10.0, 30.0, 100.0):
            uabs = torch.randn(819200).abs() * scale
            index, _ = sampling.sparse_estimate_abs(uabs, spec, table)
            row = {"what": "draw", "entries": uabs.numel(), "active": index.numel() / uabs.numel()}
            for name, never_always in (("sparse_ms", 1.0), ("dense_ms", 0.0)):
                planner.NATIVE_DENSE_NEAR = never_always
                row[name] = median_ms(lambda: sampling.sparse_estimate_abs(uabs, spec, table), repeats)
            planner.NATIVE_DENSE_NEAR = saved
            near_level = spec.delta * spec.law.abs_quantile(1.0 - sampling.TAIL)
            near = float((uabs < near_level).double().mean())
            row.update(near=near, chosen="dense" if planner.native_draws_densely(near * uabs.numel(), uabs.numel())
                       else "sparse")
            rows.append(row)
    finally:
        planner.NATIVE_DENSE_NEAR = saved
    return rows


def current_rows(repeats: int, tbs: List[int], threads: List[int]) -> List[Dict]:
    rows = []
    torch.manual_seed(0)
    saved = planner.EVENT_MAX_DENSITY
    try:
        for n_in in (700, 256):
            w, b = torch.randn(256, n_in), torch.randn(256)
            for tb in tbs:
                for density in (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5):
                    x = (torch.rand(tb, 1, n_in) < density).float()
                    for n_threads in threads:
                        torch.set_num_threads(n_threads)
                        row = {"what": "current", "tb": tb, "in": n_in, "out": 256, "density": density,
                               "threads": n_threads}
                        for name, never_always in (("event_ms", 1.0), ("dense_ms", 0.0)):
                            planner.EVENT_MAX_DENSITY = never_always
                            row[name] = median_ms(
                                lambda: linear_native.input_current(x, w, b, keep_packed=False), repeats)
                        row["pack_ms"] = median_ms(lambda: linear_native.pack_binary(x), repeats)
                        planner.EVENT_MAX_DENSITY = saved
                        ones = int(x.sum())
                        row["chosen"] = ("event" if planner.use_event_current(planner.Path.NATIVE, x, w, b, ones)
                                         else "dense")
                        rows.append(row)
    finally:
        planner.EVENT_MAX_DENSITY = saved
        torch.set_num_threads(1)
    return rows


def outer_rows(repeats: int, tbs: List[int], threads: List[int]) -> List[Dict]:
    rows = []
    torch.manual_seed(0)
    try:
        for tb in tbs:
            for n_in in (256, 700):
                for n_out in (20, 64, 256):
                    h = torch.randn(tb, 1, n_out)
                    for density in (0.0, 0.02, 0.05, 0.1, 0.2, 0.4):
                        packed = (torch.rand(tb, 1, n_in) < density).to(torch.uint8)
                        ones = int(packed.sum())
                        for n_threads in threads:
                            torch.set_num_threads(n_threads)
                            row = {"what": "outer", "tb": tb, "in": n_in, "out": n_out, "density": density,
                                   "ones": ones / packed.numel(), "threads": n_threads}
                            row["event_ms"] = median_ms(lambda: linear_native.event_weight_grad(packed, h), repeats)
                            row["dense_ms"] = median_ms(
                                lambda: h.reshape(tb, n_out).t()
                                @ linear_native.unpack_binary(packed, torch.float32).reshape(tb, n_in), repeats)
                            row["chosen"] = ("event" if planner.use_event_weight_grad(planner.Path.NATIVE, ones,
                                                                                      packed.numel())
                                             else "dense")
                            rows.append(row)
    finally:
        torch.set_num_threads(1)
    return rows


def reverse_rows(repeats: int) -> List[Dict]:
    from snntorch_localzo._ops.leaky import native as leaky_native

    rows = []
    torch.manual_seed(0)
    saved = planner.EVENT_REVERSE_SCAN_MAX_ACTIVE
    beta = torch.tensor(0.9)
    try:
        for steps, n in ((25, 32768), (100, 32768), (100, 131072)):
            for frac in (0.0, 0.001, 0.01, 0.05, 0.1, 0.25, 1.0):
                count = int(frac * n)
                index = torch.randperm(steps * n)[:count].sort().values
                values = torch.randn(count)
                row = {"what": "reverse", "steps": steps, "neurons": n, "active_per_neuron": frac}
                for name, never_always in (("events_ms", 2.0 ** 62), ("dense_ms", -1.0)):
                    planner.EVENT_REVERSE_SCAN_MAX_ACTIVE = never_always
                    row[name] = median_ms(lambda: leaky_native.reverse_scan(
                        None, None, None, beta, torch.float32, (steps, n), (index, values)), repeats)
                planner.EVENT_REVERSE_SCAN_MAX_ACTIVE = saved
                row["chosen"] = "events" if planner.use_event_reverse_scan(count, n) else "dense"
                rows.append(row)
    finally:
        planner.EVENT_REVERSE_SCAN_MAX_ACTIVE = saved
    return rows


def sampled_rows(repeats: int, tbs: List[int]) -> List[Dict]:
    rows = []
    torch.manual_seed(0)
    w = torch.randn(256, 256)
    for tb in tbs:
        h = torch.randn(tb, 1, 256)
        for frac in (0.001, 0.01, 0.05, 0.1):
            lower = torch.randperm(tb * 256)[:int(frac * tb * 256)].sort().values
            row = {"what": "sampled", "tb": tb, "in": 256, "out": 256, "active": frac}
            for name, no_c in (("c_ms", "0"), ("sampled_addmm_ms", "1")):
                enabled, clib.ENABLED = clib.ENABLED, no_c == "0"
                try:
                    row[name] = median_ms(lambda: linear_native.sparse_input_grad(h, w, lower, torch.float32),
                                          repeats)
                finally:
                    clib.ENABLED = enabled
            rows.append(row)
    return rows


def call_rows(repeats: int, calls: int = 200) -> List[Dict]:
    import snntorch.surrogate as surrogate

    rows = []
    torch.manual_seed(0)
    for shape in ((64, 128), (64, 10), (32, 1000), (128, 256), (128, 1024), (64, 12, 12, 12), (64, 64, 4, 4)):
        for membrane, (mean, std) in (("firing", (-0.3, 0.5)), ("silent", (-0.8, 0.3))):
            u = (mean + std * torch.randn(shape)).requires_grad_(True)
            g = torch.ones(shape)

            def block(fn):
                def run():
                    for _ in range(calls):
                        fn(u).backward(g)
                return run

            fns = {"atan_us": block(surrogate.atan()), "make_us": block(localzo.make())}
            times = {name: [] for name in fns}
            for name, fn in fns.items():
                fn()  # warm-up
            for _ in range(repeats):
                for name, fn in fns.items():
                    start = time.perf_counter()
                    fn()
                    times[name].append((time.perf_counter() - start) * 1e6 / calls)
            row = {"what": "call", "shape": list(shape), "membrane": membrane,
                   **{name: statistics.median(t) for name, t in times.items()}}
            row["ratio"] = row["atan_us"] / row["make_us"]
            rows.append(row)
    return rows


MEASUREMENTS = ("order", "draw", "current", "outer", "reverse", "sampled", "call")


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--out", help="JSON path")
    p.add_argument("--tb", type=int, nargs="+", default=[3200, 12800],
                   help="rows T * B of the input current (default 3200 12800)")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2],
                   help="torch threads of the input current rows (default 1 2)")
    p.add_argument("--what", nargs="+", choices=MEASUREMENTS, default=list(MEASUREMENTS),
                   help="the measurements to run (default: all)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    runs = {
        "order": lambda: order_rows(args.repeats),
        "draw": lambda: draw_rows(args.repeats),
        "current": lambda: current_rows(args.repeats, args.tb, args.threads),
        "outer": lambda: outer_rows(args.repeats, args.tb, args.threads),
        "reverse": lambda: reverse_rows(args.repeats),
        "sampled": lambda: sampled_rows(args.repeats, args.tb),
        "call": lambda: call_rows(args.repeats),
    }
    rows = [r for what in MEASUREMENTS if what in args.what for r in runs[what]()]
    for r in rows:
        if r["what"] == "order":
            print(f"order  n={r['n']:>5}: C {r['c_ms']:8.3f} ms, kthvalue {r['kthvalue_ms']:8.3f} ms, "
                  f"{r['speedup']:.1f}x")
        elif r["what"] == "current":
            print(f"current {r['in']:>3}->{r['out']} T*B={r['tb']:>5} ones {r['density']:4.0%} "
                  f"threads {r['threads']}: event {r['event_ms']:7.2f} ms, dense {r['dense_ms']:7.2f} ms, "
                  f"pack alone {r['pack_ms']:5.2f} ms (planner: {r['chosen']})")
        elif r["what"] == "outer":
            print(f"outer  {r['in']:>3}->{r['out']:>3} T*B={r['tb']:>5} ones {r['density']:4.0%} "
                  f"threads {r['threads']}: event {r['event_ms']:7.3f} ms, dense {r['dense_ms']:7.3f} ms "
                  f"(planner: {r['chosen']})")
        elif r["what"] == "reverse":
            print(f"reverse T={r['steps']:>3} n={r['neurons']:>6} active/neuron {r['active_per_neuron']:6.1%}: "
                  f"events {r['events_ms']:7.3f} ms, dense {r['dense_ms']:7.3f} ms (planner: {r['chosen']})")
        elif r["what"] == "call":
            print(f"call   {str(tuple(r['shape'])):>16} {r['membrane']:6}: ATan {r['atan_us']:6.1f} us, "
                  f"make() {r['make_us']:6.1f} us per forward + backward ({r['ratio']:.2f}x)")
        elif r["what"] == "sampled":
            print(f"sampled T*B={r['tb']:>5} active {r['active']:5.1%}: C {r['c_ms']:7.3f} ms, "
                  f"sampled_addmm {r['sampled_addmm_ms']:7.3f} ms")
        else:
            print(f"draw   near {r['near']:6.1%} active {r['active']:6.1%}: sparse {r['sparse_ms']:7.2f} ms, "
                  f"dense {r['dense_ms']:7.2f} ms (planner: {r['chosen']})")
    if args.out:
        env = {"machine": platform.machine(), "torch": torch.__version__,
               "threads": "1 (current and outer rows: their own)"}
        Path(args.out).write_text(json.dumps({"environment": env, "rows": rows}, indent=1) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
