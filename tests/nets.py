"""Small networks that more than one test file (or test script) builds."""

import torch.nn as nn

import snntorch_localzo as localzo


class LinearSequenceNet(nn.Module):
    """Both sequence layers of the package: ``nn.Linear`` and
    ``localzo.Leaky.forward_sequence``, then a ``localzo.LinearLeaky``
    (``beta`` 0.9, LocalZO spike gradients of the given ``laws`` and
    ``delta``). Returns the LinearLeaky's ``(spk, mem)``, each ``[T, B, n_out]``."""

    def __init__(self, n_in: int, hidden: int, n_out: int, delta: float,
                 laws=("normal", "normal")):
        super().__init__()
        self.fc = nn.Linear(n_in, hidden)
        self.lif = localzo.Leaky(beta=0.9, spike_grad=localzo.make(laws[0], delta=delta))
        self.seq = localzo.LinearLeaky(0.9, hidden, n_out,
                                       spike_grad=localzo.make(laws[1], delta=delta))

    def forward(self, x):  # x: [T, B, n_in]
        self.lif.init_leaky()
        spk, _ = self.lif.forward_sequence(self.fc(x))
        return self.seq(spk)
