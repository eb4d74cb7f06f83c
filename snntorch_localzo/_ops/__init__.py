"""The operators: the spike function (``spike/``), the Leaky neuron
(``leaky/``) and the Linear + Leaky sequence layer (``linear_leaky/``), each
as

* ``reference.py`` -- plain PyTorch, the definition every path is tested
  against bit for bit;
* ``native.py`` -- the native CPU path: only the entries that can have a
  non-zero estimate draw (in C, the spike function's fused pass, for float32
  and the laws it samples; ``sampling.sparse_estimate`` otherwise), and,
  for the Leaky layers, the time loops in C (``_scan.c``, loaded by
  ``clib.py``, which every operator's C calls go through);
* ``triton.py`` -- the Triton kernels (CUDA, or the CPU through the
  interpreter), built from ``triton_common.py``;
* ``autograd.py`` -- the glue: runs the path that ``planner.py`` picks.

Shared by all: ``spec.py`` (the estimate as operator arguments),
``sampling.py`` (the estimate's definition and its draws), ``layout.py``
(the code byte and the meter's slots), ``resets.py``, ``rng.py``,
``oplib.py`` (``torch.library`` registration), ``workspace.py`` (CPU scratch
memory) and ``active.py`` (the active set a layer hands the next).
docs/architecture.md draws how a call flows through them.
"""
