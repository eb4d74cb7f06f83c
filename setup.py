"""Builds the optional C time loops of the native CPU path
(``snntorch_localzo/_ops/leaky/_scan.c``). Everything else is in
pyproject.toml. Without a C compiler the build skips the extension and the
package runs the same loops as vectorised PyTorch operations."""

import ast
import os

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


class BuildExt(build_ext):
    """IEEE arithmetic, rounded at every operation (no fused multiply-add, no
    fast-math): the C loops must round exactly as PyTorch's operations do."""

    def build_extensions(self):
        if self.compiler.compiler_type == "msvc":
            flags = ["/O2", "/fp:precise"]
        else:
            flags = ["-O3", "-ffp-contract=off", "-fno-fast-math"]
        for ext in self.extensions:
            ext.extra_compile_args = flags
        super().build_extensions()


setup(
    ext_modules=[
        Extension(
            "snntorch_localzo._ops.leaky._scan",
            sources=["snntorch_localzo/_ops/leaky/_scan.c"],
            define_macros=reset_macros(),
            depends=[os.path.relpath(RESETS_FILE, HERE)],  # rebuilt when the numbering changes
            optional=True,
        )
    ],
    cmdclass={"build_ext": BuildExt},
)
