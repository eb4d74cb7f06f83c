"""snntorch-localzo: LocalZO training for snnTorch spiking neural networks.

Usage::

    import snntorch as snn
    import snntorch_localzo as localzo

    lif = snn.Leaky(beta=0.9, spike_grad=localzo.make())

Importing the package also makes ``snntorch.surrogate.localzo`` an alias of
:func:`make`; nothing else in snnTorch is changed.
"""

from ._version import __version__
from . import distributions
from ._backend import get_backend, set_backend, use_backend
from .estimator import LocalZO, make
from .neurons import Leaky, LinearLeaky
from .stats import ActivityMeter

__all__ = [
    "__version__",
    "make",
    "LocalZO",
    "Leaky",
    "LinearLeaky",
    "ActivityMeter",
    "distributions",
    "get_backend",
    "set_backend",
    "use_backend",
]


def _register_with_snntorch() -> None:
    try:
        import snntorch.surrogate as _surrogate
    except ImportError:  # pragma: no cover - snntorch is a dependency
        return
    if not hasattr(_surrogate, "localzo"):
        _surrogate.localzo = make


_register_with_snntorch()
