"""ANN-to-SNN conversion into snnTorch, with FTBC calibration.

Train an ANN whose activations are :class:`QCFS` (``swap_relu`` puts them in
place of ``nn.ReLU``), turn it into a spiking network of snnTorch neurons
with :func:`convert`, and correct its per-step error with :func:`calibrate`
(forward temporal bias correction, Wu et al., ECCV 2024)::

    from snntorch_localzo import conversion

    ann = conversion.swap_relu(my_relu_mlp)              # then train it as usual
    snn_net = conversion.convert(ann)                    # snn.Leaky neurons, no bias
    conversion.calibrate(snn_net, ann, x_train, num_steps=8)
    logits = snn_net(x_test, num_steps=8)                # mean output over 8 steps

Loaders for image data on disk (class folders, numpy arrays, CIFAR's python
batches) are in :mod:`snntorch_localzo.conversion.data`.
"""

from .convert import convert
from .ftbc import calibrate, conversion_error
from .network import ConvertedSNN, IFNeuron
from .qcfs import QCFS, swap_relu

__all__ = [
    "QCFS",
    "swap_relu",
    "convert",
    "calibrate",
    "conversion_error",
    "ConvertedSNN",
    "IFNeuron",
]
