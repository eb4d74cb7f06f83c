"""Builds the optional C time loops of the native CPU path
(``snntorch_localzo/_ops/leaky/_scan.c``). Everything else is in
pyproject.toml. Without a C compiler the build skips the extension and the
package runs the same loops as vectorised PyTorch operations."""

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


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
            optional=True,
        )
    ],
    cmdclass={"build_ext": BuildExt},
)
