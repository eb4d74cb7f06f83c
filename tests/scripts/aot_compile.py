"""Compiles every Triton kernel of the package for a Hopper GPU (sm_90),
ahead of time, without a GPU: Triton's front end, LLVM and ptxas all run on
the CPU. Run by test_compile.py in a subprocess without TRITON_INTERPRET (the
interpreter would replace the kernels). Prints the number of kernels built.

Each kernel is compiled twice: without specialisations, and with the ones a
real launch gets from torch's allocations (every pointer 16-byte aligned,
every integer argument divisible by 16; Triton marks them ``tt.divisibility``
and vectorises loads and stores accordingly), so the variants that run on a
GPU are the ones checked here.

``--offsets`` compiles only the kernels that loop over time and checks, in
their Triton IR, that no offset is multiplied in 32 bits (``t * n`` must be
int64: it passes 2**31 once ``T * n`` does); the full run checks it too.
"""

import inspect
import itertools
import os
import sys

assert os.environ.get("TRITON_INTERPRET", "0") in ("", "0"), "run without the interpreter"

import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from snntorch_localzo._ops import resets, rule_triton as rule, triton_common as tc  # noqa: E402
from snntorch_localzo._ops.leaky import triton as leaky  # noqa: E402
from snntorch_localzo._ops.linear_leaky import triton as linear  # noqa: E402
from snntorch_localzo._ops.spike import triton as spike  # noqa: E402

TARGET = GPUTarget("cuda", 90, 32)
DT = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}
# pointers whose element type is not the data dtype
FIXED_PTRS = {"code_ptr": "*u8", "seed_ptr": "*i64", "table_ptr": "*fp32", "absz_ptr": "*fp32",
              "count_ptr": "*i64", "beta_ptr": "*fp32", "thr_ptr": "*fp32", "graded_ptr": "*fp32",
              "trace_ptr": "*fp32", "carry_ptr": "*fp32", "dw_ptr": "*fp32", "step_ptr": "*fp32",
              "consts_ptr": "*fp64"}
INTS = {"n", "dn", "T", "t0", "steps", "total", "rows_total", "row0", "rows", "IN", "groups", "pos", "k1", "k2"}


def compile_kernel(kernel, dtype, constexprs, aligned):
    fn = kernel.fn if hasattr(kernel, "fn") else kernel
    params = inspect.signature(fn).parameters
    constexprs = dict(constexprs)
    for name, p in params.items():  # constexpr parameters with defaults
        if p.default is not inspect.Parameter.empty:
            constexprs.setdefault(name, p.default)
    sig, attrs = {}, {}
    for i, name in enumerate(params):
        if name in constexprs:
            sig[name] = "constexpr"
            continue
        if name.endswith("_ptr"):
            sig[name] = FIXED_PTRS.get(name, "*" + DT[dtype])
        elif name in INTS:
            sig[name] = "i32"
        else:
            sig[name] = "fp32"
        if aligned and sig[name] != "fp32":
            attrs[(i,)] = [["tt.divisibility", 16]]
    src = ASTSource(fn=kernel, signature=sig, constexprs=constexprs, attrs=attrs)
    return triton.compile(src, target=TARGET, options=dict(tc.LAUNCH))


def variants():
    """(kernel, dtype, constexprs) of every configuration compiled here."""
    for dtype, kind, m, ext in itertools.product(DT, range(5), (1, 5), (False, True)):
        # every distribution and sample count in float32; the other dtypes and
        # the external-z hook once each
        if (dtype != "float32" or ext) and (kind, m) != (0, 5):
            continue
        p = -1 if kind == 4 else 1
        yield spike.spike_bwd_kernel, dtype, dict(
            KIND=kind, P=p, M=m, EXTERNAL=ext, TRACK=ext, BLOCK=tc.BLOCK)
        yield leaky.leaky_code_kernel, dtype, dict(
            HAS_MEM=ext, KIND=kind, M=m, EXTERNAL=ext, ADAPTIVE=False, BLOCK=tc.BLOCK)
        if kind in (0, 1, 2) and not ext:  # the laws of the adaptive step (make()'s default)
            yield leaky.leaky_code_kernel, dtype, dict(
                HAS_MEM=False, KIND=kind, M=m, EXTERNAL=False, ADAPTIVE=True, BLOCK=tc.BLOCK)
        yield leaky.leaky_estimate_kernel, dtype, dict(
            KIND=kind, P=p, M=m, EXTERNAL=ext, TRACK=not ext, BLOCK=tc.BLOCK)
    for dtype, reset, flag in itertools.product(DT, sorted(resets.RESETS.values()), (False, True)):
        yield leaky.leaky_scan_fwd_kernel, dtype, dict(RESET=reset, HAS_MEM=flag, BLOCK=tc.SCAN_BLOCK)
        yield leaky.leaky_scan_bwd_kernel, dtype, dict(
            RESET=reset, HAS_E=True, HAS_GMEM=flag, NEED_GMEM0=flag, BLOCK=tc.SCAN_BLOCK)
    for dtype in DT:
        yield linear.trace_kernel, dtype, {"BLOCK": tc.SCAN_BLOCK}
        yield linear.sparse_dw_kernel, dtype, {"BLOCK_R": linear.BLOCK_R, "BLOCK_IN": linear.BLOCK_IN}
    for block in (256, rule.RULE_BLOCK):  # the adaptive step's rule (float32 only)
        yield rule.rule_delta_kernel, "float32", {"BLOCK": block}
    for ext, track in itertools.product((False, True), (False, True)):  # sampling="gradient" (float32)
        yield spike.weighted_bwd_kernel, "float32", dict(EXTERNAL=ext, TRACK=track, BLOCK=tc.BLOCK)


#: Kernels that walk a time loop: their offsets ``t * n`` must be int64.
TIME_LOOPS = (leaky.leaky_scan_fwd_kernel, leaky.leaky_scan_bwd_kernel, linear.trace_kernel)


def int32_products(compiled) -> list:
    """The 32-bit integer multiplications in a compiled kernel's Triton IR."""
    return [line.split(" loc(")[0].strip() for line in compiled.asm["ttir"].splitlines()
            if "arith.muli" in line and line.split(" loc(")[0].rstrip().endswith(": i32")]


def check_offsets(kernel, dtype, constexprs, compiled) -> None:
    if kernel in TIME_LOOPS and int32_products(compiled):
        raise SystemExit(f"{kernel.__name__} ({dtype}, {constexprs}) multiplies offsets in 32 bits: "
                         + "; ".join(int32_products(compiled)))


def main():
    only_offsets = "--offsets" in sys.argv[1:]
    built = 0
    for kernel, dtype, constexprs in variants():
        if only_offsets and (kernel not in TIME_LOOPS or dtype != "float32"):
            continue
        # every configuration as real launches get it; without alignment in float32
        for aligned in (True, False) if dtype == "float32" else (True,):
            check_offsets(kernel, dtype, constexprs, compile_kernel(kernel, dtype, constexprs, aligned))
            built += 1
    what = "time-loop kernels with int64 offsets" if only_offsets else "kernels"
    print(f"compiled {built} {what} for sm_90 with triton {triton.__version__}")


if __name__ == "__main__":
    sys.exit(main())
