"""The reset mechanisms of the Leaky neuron as the operators take them."""

RESET_SUBTRACT, RESET_ZERO, RESET_NONE = 0, 1, 2
#: snnTorch's ``reset_mechanism`` names.
RESETS = {"subtract": RESET_SUBTRACT, "zero": RESET_ZERO, "none": RESET_NONE}
