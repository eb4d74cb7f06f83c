"""snntorch-localzo: LocalZO training for snnTorch spiking neural networks.

Usage::

    import snntorch as snn
    import snntorch_localzo as localzo

    lif = snn.Leaky(beta=0.9, spike_grad=localzo.make())

Importing the package also makes ``snntorch.surrogate.localzo`` an alias of
:func:`make`; nothing else in snnTorch is changed. The other training methods
live in subpackages, imported on first use: :mod:`snntorch_localzo.opzo`
(online pseudo-zeroth-order training) and :mod:`snntorch_localzo.conversion`
(ANN-to-SNN conversion with forward temporal bias correction).
"""

import importlib

from ._version import __version__
from . import distributions
from ._backend import get_backend, set_backend, use_backend
from .adaptive import AdaptiveDelta
from .estimator import LocalZO, make
from .neurons import Leaky, LinearLeaky
from .stats import ActivityMeter

__all__ = [
    "__version__",
    "make",
    "LocalZO",
    "AdaptiveDelta",
    "Leaky",
    "LinearLeaky",
    "ActivityMeter",
    "distributions",
    "get_backend",
    "set_backend",
    "use_backend",
    "opzo",
    "conversion",
]

_SUBPACKAGES = ("opzo", "conversion")


def __getattr__(name):
    if name in _SUBPACKAGES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _register_with_snntorch() -> None:
    try:
        import snntorch.surrogate as _surrogate
    except ImportError:  # pragma: no cover - snntorch is a dependency
        return
    if not hasattr(_surrogate, "localzo"):
        _surrogate.localzo = make


_register_with_snntorch()
