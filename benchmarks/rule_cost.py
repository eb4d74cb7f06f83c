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
  which the dense path runs too when it keeps the input for backward.

The first two run on one thread.

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
from snntorch_localzo._ops import order, planner, sampling
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


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--out", help="JSON path")
    p.add_argument("--tb", type=int, nargs="+", default=[3200, 12800],
                   help="rows T * B of the input current (default 3200 12800)")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2],
                   help="torch threads of the input current rows (default 1 2)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    rows = order_rows(args.repeats) + draw_rows(args.repeats) + current_rows(args.repeats, args.tb, args.threads)
    for r in rows:
        if r["what"] == "order":
            print(f"order  n={r['n']:>5}: C {r['c_ms']:8.3f} ms, kthvalue {r['kthvalue_ms']:8.3f} ms, "
                  f"{r['speedup']:.1f}x")
        elif r["what"] == "current":
            print(f"current {r['in']:>3}->{r['out']} T*B={r['tb']:>5} ones {r['density']:4.0%} "
                  f"threads {r['threads']}: event {r['event_ms']:7.2f} ms, dense {r['dense_ms']:7.2f} ms, "
                  f"pack alone {r['pack_ms']:5.2f} ms (planner: {r['chosen']})")
        else:
            print(f"draw   near {r['near']:6.1%} active {r['active']:6.1%}: sparse {r['sparse_ms']:7.2f} ms, "
                  f"dense {r['dense_ms']:7.2f} ms (planner: {r['chosen']})")
    if args.out:
        env = {"machine": platform.machine(), "torch": torch.__version__,
               "threads": "1 (current rows: their own)"}
        Path(args.out).write_text(json.dumps({"environment": env, "rows": rows}, indent=1) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
