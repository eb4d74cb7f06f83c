"""Builds the optional C time loops of the native CPU path
(``snntorch_localzo/_ops/_scan.c``). Everything else is in
pyproject.toml. Without a C compiler the build skips the extension and the
package runs the same loops as vectorised PyTorch operations."""

import ast
import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = os.path.dirname(os.path.abspath(__file__))
#: The one definition of the reset mechanisms, shared with the C loops.
RESETS_FILE = os.path.join(HERE, "snntorch_localzo", "_ops", "resets.py")


def reset_macros(path=RESETS_FILE):
    """``[(name, value)]`` of the ``RESET_*`` int constants of ``resets.py``,
    read from its syntax tree (neither torch nor the package is imported)."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    macros = []
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            name = getattr(node.targets[0], "id", "")
            if name.startswith("RESET_"):
                value = ast.literal_eval(node.value)
                if type(value) is not int:
                    raise ValueError(f"{path}: {name} must be an int literal")
                macros.append((name, str(value)))
    if sorted(n for n, _ in macros) != ["RESET_NONE", "RESET_SUBTRACT", "RESET_ZERO"]:
        raise ValueError(f"{path}: expected RESET_SUBTRACT, RESET_ZERO and RESET_NONE, got {macros}")
    return macros


def _compiles_with(compiler, flags) -> bool:
    """Whether ``compiler`` builds and links a small OpenMP program with ``flags``."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "omp_check.c")
        with open(src, "w", encoding="utf-8") as f:
            f.write("#include <omp.h>\nint main(void) { return omp_get_max_threads() > 0 ? 0 : 1; }\n")
        try:
            objs = compiler.compile([src], output_dir=tmp, extra_postargs=flags)
            compiler.link_executable(objs, os.path.join(tmp, "omp_check"), extra_postargs=flags)
        except Exception:  # no OpenMP here: the loops run on one thread
            return False
    return True


class BuildExt(build_ext):
    """IEEE arithmetic, rounded at every operation (no fused multiply-add, no
    fast-math): the C loops must round exactly as PyTorch's operations do.
    On Linux with GCC the spike function's backward also splits its rows over
    OpenMP threads (torch's own runtime, loaded first, serves them: one pool,
    sized by ``torch.set_num_threads``); elsewhere, or where the check fails,
    it runs on one thread."""

    def build_extensions(self):
        omp = []
        if self.compiler.compiler_type == "msvc":
            flags = ["/O2", "/fp:precise"]
        else:
            flags = ["-O3", "-ffp-contract=off", "-fno-fast-math"]
            if sys.platform.startswith("linux") and os.environ.get("SNNTORCH_LOCALZO_NO_OPENMP", "0") in ("", "0") \
                    and _compiles_with(self.compiler, ["-fopenmp"]):
                omp = ["-fopenmp"]
        for ext in self.extensions:
            ext.extra_compile_args = flags + omp
            ext.extra_link_args = omp
            if omp:
                ext.define_macros = list(ext.define_macros) + [("ZO_OPENMP", "1")]
        super().build_extensions()


setup(
    ext_modules=[
        Extension(
            "snntorch_localzo._ops._scan",
            sources=["snntorch_localzo/_ops/_scan.c"],
            define_macros=reset_macros(),
            depends=[os.path.relpath(RESETS_FILE, HERE)],  # rebuilt when the numbering changes
            optional=True,
        )
    ],
    cmdclass={"build_ext": BuildExt},
)
