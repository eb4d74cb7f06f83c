"""Compiles every Triton kernel of the package for a Hopper GPU (sm_90),
ahead of time, without a GPU: Triton's front end, LLVM and ptxas all run on
the CPU. Run by test_compile.py in a subprocess without TRITON_INTERPRET (the
interpreter would replace the kernels). Prints the number of kernels built.
"""

import inspect
import itertools
import os
import sys

assert os.environ.get("TRITON_INTERPRET", "0") in ("", "0"), "run without the interpreter"

import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from snntorch_localzo._ops import zo_triton as zt  # noqa: E402
from snntorch_localzo._ops.leaky import triton as leaky  # noqa: E402
from snntorch_localzo._ops.linear_leaky import triton as linear  # noqa: E402
from snntorch_localzo._ops.spike import triton as spike  # noqa: E402
from snntorch_localzo.distributions import TABLE_SIZE  # noqa: E402

TARGET = GPUTarget("cuda", 90, 32)
DT = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}
# pointers whose element type is not the data dtype
FIXED_PTRS = {"code_ptr": "*u8", "seed_ptr": "*i64", "table_ptr": "*fp32", "absz_ptr": "*fp32",
              "count_ptr": "*i64", "beta_ptr": "*fp32", "thr_ptr": "*fp32", "graded_ptr": "*fp32",
              "pos_ptr": "*i64", "ptr_ptr": "*i64", "row_ptr": "*i32", "e_ptr": "*fp32",
              "trace_ptr": "*fp32", "carry_ptr": "*fp32", "dw_ptr": "*fp32"}
INTS = {"n", "T", "t0", "steps", "nnz", "stride", "IN", "OUT"}


def compile_kernel(kernel, dtype, constexprs):
    fn = kernel.fn if hasattr(kernel, "fn") else kernel
    params = inspect.signature(fn).parameters
    constexprs = dict(constexprs)
    for name, p in params.items():  # constexpr parameters with defaults
        if p.default is not inspect.Parameter.empty:
            constexprs.setdefault(name, p.default)
    sig = {}
    for name in params:
        if name in constexprs:
            sig[name] = "constexpr"
        elif name.endswith("_ptr"):
            sig[name] = FIXED_PTRS.get(name, "*" + DT[dtype])
        elif name in INTS:
            sig[name] = "i32"
        else:
            sig[name] = "fp32"
    src = ASTSource(fn=kernel, signature=sig, constexprs=constexprs)
    return triton.compile(src, target=TARGET, options={"enable_fp_fusion": False, "num_warps": 4})


def main():
    common = {"TABLE_N": TABLE_SIZE, "TABLE_SCALE": zt.TABLE_SCALE, "BLOCK": zt.BLOCK}
    built = 0
    for dtype, kind, m, ext in itertools.product(DT, range(5), (1, 5), (False, True)):
        # every distribution and sample count in float32; the other dtypes and
        # the external-z hook once each
        if (dtype != "float32" or ext) and (kind, m) != (0, 5):
            continue
        compile_kernel(spike.spike_bwd_kernel, dtype,
                       dict(common, KIND=kind, P=-1 if kind == 4 else 1, M=m, EXTERNAL=ext, TRACK=ext))
        built += 1
    scan = dict(common, BLOCK=zt.SCAN_BLOCK)
    for dtype, reset, has_mem in itertools.product(DT, range(3), (False, True)):
        compile_kernel(leaky.leaky_fwd_kernel, dtype,
                       dict(scan, RESET=reset, HAS_MEM=has_mem, KIND=3, M=2, EXTERNAL=False))
        compile_kernel(leaky.leaky_bwd_kernel, dtype,
                       dict(scan, RESET=reset, HAS_GSPK=has_mem, HAS_GMEM=True, NEED_GMEM0=has_mem,
                            KIND=0, P=1, M=2, EXTERNAL=False, TRACK=has_mem))
        built += 2
    for dtype in DT:
        compile_kernel(linear.trace_kernel, dtype, {"BLOCK": zt.SCAN_BLOCK})
        compile_kernel(linear.active_grad_kernel, dtype,
                       dict(common, KIND=0, P=1, M=2, EXTERNAL=False))
        compile_kernel(linear.sparse_dx_kernel, dtype, {"BLOCK_E": 64, "BLOCK_J": 64})
        built += 3
    compile_kernel(linear.sparse_dw_kernel, "float32", {"BLOCK_K": 16, "BLOCK_IN": 64})
    built += 1
    print(f"compiled {built} kernels for sm_90 with triton {triton.__version__}")


if __name__ == "__main__":
    sys.exit(main())
