"""Operators, each as ``<op>/{reference,triton,autograd}.py``: the PyTorch
reference, the Triton kernels, and the autograd glue that picks one."""
