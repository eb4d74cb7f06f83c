"""macOS and Windows have no Triton (the package does not depend on it there):
the package must import and train with ``make()``, ``Leaky`` and
``LinearLeaky`` when ``import triton`` fails."""

import subprocess
import sys

CODE = r"""
import sys
sys.modules["triton"] = None  # import triton now raises ImportError
import torch, torch.nn as nn, snntorch as snn
import snntorch_localzo as localzo
from snntorch_localzo import _backend
assert not _backend.triton_available()
torch.manual_seed(0)
sg = localzo.make(track=True)
net = nn.ModuleList([nn.Linear(6, 12), snn.Leaky(beta=0.9, spike_grad=sg),
                     localzo.Leaky(beta=0.9, spike_grad=sg), localzo.LinearLeaky(0.9, 12, 4)])
opt = torch.optim.SGD(net.parameters(), lr=0.5)
x = torch.rand(5, 3, 6) * 3
before = [p.detach().clone() for p in net.parameters()]
for _ in range(2):
    m1, m2 = net[1].init_leaky(), net[2].init_leaky()
    s = []
    for t in range(5):
        a, m1 = net[1](net[0](x[t]), m1)
        b, m2 = net[2](a, m2)
        s.append(b)
    out, mem = net[3](torch.stack(s))
    loss = out.sum() + mem.pow(2).mean()
    opt.zero_grad(); loss.backward(); opt.step()
assert all(not torch.equal(b, p) for b, p in zip(before, net.parameters())), "every layer learns"
assert 0 < sg.active_fraction < 1
for mode in ("auto", "reference"):
    localzo.set_backend(mode)
try:
    localzo.set_backend("triton")
except RuntimeError as exc:
    assert "Triton does not import here" in str(exc)
else:
    raise SystemExit("set_backend('triton') without Triton must fail")
print("ok")
"""


def test_package_imports_and_trains_without_triton():
    out = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().endswith("ok")
