"""The reset mechanisms of the Leaky neuron, as the operators number them.

The one definition: the Python paths import these names, the Triton kernels
take them as compile-time constants (``triton_common.py``) and the C loops
(``_scan.c``) get them as macros from ``setup.py``, which reads this
file as text. So it imports nothing and assigns plain int literals.
"""

RESET_SUBTRACT = 0
RESET_ZERO = 1
RESET_NONE = 2

#: snnTorch's ``reset_mechanism`` names.
RESETS = {"subtract": RESET_SUBTRACT, "zero": RESET_ZERO, "none": RESET_NONE}
