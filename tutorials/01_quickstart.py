# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Tutorial 1: your snnTorch model, trained with LocalZO
#
# In this tutorial you will:
#
# * build a small spiking network exactly as you would in snnTorch,
# * switch its training to **LocalZO** by changing *one argument*,
# * look inside the backward pass to see how few neurons receive a gradient,
# * swap `snn.Leaky` for `localzo.Leaky`, the drop-in neuron with fused GPU kernels.
#
# **Why bother?** Training a spiking network needs the derivative of the spike
# function, which is zero almost everywhere. snnTorch's answer is a *surrogate gradient*:
# in the backward pass the step function is treated as if it were a smooth bump. Every
# neuron then gets a (usually tiny) gradient at every time step, and the backward pass
# costs as much as a dense network's.
#
# LocalZO (Mukhoty et al., *Direct Training of SNN using Local Zeroth Order Method*,
# NeurIPS 2023) replaces that bump by a *random* estimate: each neuron draws a random
# number $z$, and its gradient is non-zero only if its membrane potential is within
# $\delta |z|$ of the threshold. Most neurons get an exact zero, which is what sparse
# GPU kernels can skip, and *on average* the estimate equals a surrogate gradient, so
# the network learns as it would with one. Tutorial 2 shows the maths; here we just
# use it.
#
# Install the package with the tutorial extras first:
#
# ```bash
# pip install -e ".[tutorials]"   # from the root of a clone of this repository
# ```
#
# Everything here runs on a CPU in well under a minute; nothing is downloaded.

# %%
import os
from pathlib import Path

import torch
import torch.nn as nn
import snntorch as snn

import snntorch_localzo as localzo
from snntorch_localzo.demo import plots
from snntorch_localzo.demo.data import spiking_digits

# The test suite sets these two to run a tiny version of this notebook quickly.
FAST = os.environ.get("SNNTORCH_LOCALZO_TUTORIAL_FAST") == "1"
FIGURES = Path(os.environ.get("SNNTORCH_LOCALZO_FIGURES", "figures"))

device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
num_steps = 8 if FAST else 25  # time steps per sample
hidden = 72 if FAST else 128  # hidden neurons
num_epochs = 2 if FAST else 10
print(f"device: {device}, snnTorch {snn.__version__}, snntorch-localzo {localzo.__version__}")

# %% [markdown]
# ## 1. The data: handwritten digits as spike trains
#
# scikit-learn ships 1797 handwritten digits of 8x8 pixels. `spiking_digits` turns each
# pixel into a spike train with *rate coding*: at every time step the pixel spikes with
# a probability equal to its brightness (the same idea as snnTorch's `spikegen.rate`).
# The result is a tensor of shape `[time, samples, 64]`, time first, as snnTorch
# expects, split into training and test sets.

# %%
data = spiking_digits(num_steps=num_steps, seed=0, device=device)
print("train:", tuple(data.x_train.shape), " test:", tuple(data.x_test.shape))
print("fraction of input entries that are spikes:", round(data.x_train.mean().item(), 3))

# %% [markdown]
# ## 2. A plain snnTorch network
#
# Two fully connected layers, each followed by a leaky integrate-and-fire neuron. Nothing
# here is specific to LocalZO: `spike_grad=None` means `snn.Leaky` keeps its default
# surrogate gradient (arctangent), and `leaky` lets us swap the neuron class later.
#
# Each neuron keeps its membrane potential between calls (`self.lif1.mem`), and
# `init_leaky()` sets it back to rest at the start of every sequence. We read the network
# out by the mean membrane potential of the output neurons over time and use
# cross-entropy on it, a common and robust choice.

# %%
class Net(nn.Module):
    def __init__(self, spike_grad=None, leaky=snn.Leaky, beta=0.9):
        super().__init__()
        extra = {} if spike_grad is None else {"spike_grad": spike_grad}
        self.fc1 = nn.Linear(64, hidden)
        self.lif1 = leaky(beta=beta, **extra)
        self.fc2 = nn.Linear(hidden, 10)
        self.lif2 = leaky(beta=beta, **extra)

    def forward(self, x):
        self.lif1.init_leaky()  # every sequence starts from rest
        self.lif2.init_leaky()
        mem2_rec = []
        for step in range(x.shape[0]):  # loop over time
            spk1, mem1 = self.lif1(self.fc1(x[step]))  # each neuron keeps its own membrane
            spk2, mem2 = self.lif2(self.fc2(spk1))
            mem2_rec.append(mem2)
        return torch.stack(mem2_rec)  # [time, batch, 10]


# %% [markdown]
# The training loop is the usual one. It also returns a small history per epoch: the
# mean training loss, the test accuracy and, when we hand it a LocalZO object that
# counts (more on that in section 4), the fraction of neurons that received a non-zero
# gradient.

# %%
def train(net, epochs=num_epochs, spike_grad=None, batch_size=64, seed=0):
    torch.manual_seed(seed)
    optimizer = torch.optim.Adam(net.parameters(), lr=2e-3)
    loss_fn = nn.CrossEntropyLoss()
    history = {"loss": [], "test_acc": [], "active": []}
    n = data.x_train.shape[1]
    for epoch in range(epochs):
        if spike_grad is not None:
            spike_grad.reset_stats()  # count this epoch only
        net.train()
        total = 0.0
        order = torch.randperm(n, device=device)
        for first in range(0, n, batch_size):
            idx = order[first : first + batch_size]
            mem = net(data.x_train[:, idx])
            loss = loss_fn(mem.mean(0), data.y_train[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(idx)
        net.eval()
        with torch.no_grad():
            pred = net(data.x_test).mean(0).argmax(1)
            acc = (pred == data.y_test).float().mean().item()
        history["loss"].append(total / n)
        history["test_acc"].append(acc)
        if spike_grad is not None:
            history["active"].append(spike_grad.active_fraction)
        active = f", active in backward {100 * history['active'][-1]:.2f}%" if spike_grad else ""
        print(f"epoch {epoch + 1}: loss {total / n:.3f}, test accuracy {100 * acc:.2f}%{active}")
    return history


torch.manual_seed(0)
net_atan = Net().to(device)
print("spike_grad of the default snn.Leaky:", net_atan.lif1.spike_grad)
history_atan = train(net_atan)

# %% [markdown]
# ## 3. Switch to LocalZO: one argument
#
# `localzo.make()` returns an object that snnTorch accepts wherever it accepts a
# surrogate gradient. Pass it as `spike_grad` and you are done:
#
# ```python
# snn.Leaky(beta=0.9, spike_grad=localzo.make())
# ```
#
# The **forward pass does not change at all**: the spikes are still the Heaviside step of
# `mem - threshold`. Let us check that on a batch, starting both networks from the same
# weights:

# %%
spike_grad = localzo.make(track=True)  # uniform z, adaptive step; track=True counts (section 4)
print(spike_grad)

torch.manual_seed(0)
net_localzo = Net(spike_grad=spike_grad).to(device)
torch.manual_seed(0)
net_surrogate = Net().to(device)  # same seed, same initial weights as net_localzo and net_atan
with torch.no_grad():
    same_forward = torch.equal(net_localzo(data.x_test), net_surrogate(data.x_test))
print("same forward values as with snnTorch's surrogate:", same_forward)

# %% [markdown]
# Only the backward differs. Train it; it starts from the same weights as the ATan network
# and sees the batches in the same order:

# %%
history_localzo = train(net_localzo, spike_grad=spike_grad)

# %% [markdown]
# ## 4. How many neurons get a gradient? The sparsity meter
#
# `localzo.make(track=True)` counts, at every backward call, how many entries of the
# spike gradient were non-zero, on the device and without slowing training down.
# `spike_grad.active_fraction` is the fraction since the last `spike_grad.reset_stats()`
# (our training loop resets it at each epoch), `spike_grad.meter.last_fraction` the
# fraction of the most recent backward call.
#
# With a surrogate gradient this number would be 100%: every neuron gets a gradient at
# every step, however small. With LocalZO only a few percent do.

# %%
print(f"last epoch: {100 * history_localzo['active'][-1]:.2f}% of the spike gradients were non-zero")
print(f"most recent backward call: {100 * spike_grad.meter.last_fraction:.2f}%")

# %% [markdown]
# ### Choosing delta
#
# `make()` picks its step `delta` at every call from the layer's membranes (about 2% of a
# firing layer active, more while it is silent). A fixed `delta` is one argument away. The
# fraction of active neurons grows linearly with it: roughly
# $2\,\mathbb{E}|z|\,\delta\,\rho$, where $\rho$ is how densely the membrane potentials
# crowd around the threshold. In this small network many membranes sit near the
# threshold, so a small fixed step keeps the backward sparser still. Try `delta=0.008`,
# the value the package's command line uses on this network (and a fixed step is what
# `localzo.Leaky`'s fused paths take, below):

# %%
sparse_grad = localzo.make(delta=0.008, track=True)
torch.manual_seed(0)
history_sparse = train(Net(spike_grad=sparse_grad).to(device), spike_grad=sparse_grad)

# %% [markdown]
# ## 5. `localzo.Leaky`: the same neuron, fused
#
# `localzo.Leaky` subclasses `snn.Leaky` and takes exactly the same arguments; its
# `spike_grad` defaults to `localzo.make()`. Its forward values are bit for bit those of
# `snn.Leaky`. Each time step runs fused: on a CUDA GPU as Triton kernels (state update,
# threshold, spike, and the random LocalZO directions in a parallel kernel), keeping one
# byte per neuron between the two passes instead of a copy of the membrane; on the CPU,
# from 2^17 neurons per step (batch times layer width), as the *native path*, which draws
# random directions only for the neurons that can get a non-zero estimate and keeps only
# those for backward. Smaller CPU steps, like this network's, run snnTorch's own
# operations for the state, and the spike function's backward is one C pass (each
# sample's step, the draw where an estimate can be non-zero, the gradient), as with
# `snn.Leaky` and `localzo.make()`. Tutorial 4 measures both.

# %%
fused_grad = localzo.make(delta=0.008, track=True)
torch.manual_seed(0)
net_fused = Net(spike_grad=fused_grad, leaky=localzo.Leaky).to(device)
torch.manual_seed(0)
net_plain = Net(spike_grad=fused_grad).to(device)
with torch.no_grad():
    same_forward_fused = torch.equal(net_fused(data.x_test), net_plain(data.x_test))
print("localzo.Leaky forward equals snn.Leaky forward:", same_forward_fused)
print("localzo.Leaky is an snn.Leaky:", isinstance(net_fused.lif1, snn.Leaky))

history_fused = train(net_fused, spike_grad=fused_grad)

# %% [markdown]
# These epochs start from the same weights and see the same batches as the `delta=0.008`
# run of section 4, with the same forward pass. On the CPU this small network takes the
# same reference path, so the run is that of section 4, draw for draw. On a GPU the
# kernels draw their directions their own way (the same distribution, other numbers), so
# the two runs differ a little from the first backward pass on, by chance alone.

# %% [markdown]
# ## 6. Pictures
#
# Accuracy per epoch for the four runs, and the fraction of neurons that received a
# gradient (log scale). The ATan run has no curve on the right: a surrogate gradient is
# non-zero for every neuron, 100% by construction. On the CPU the last two runs are the
# same run (section 5), so their curves lie on top of each other; each run has its own
# line style and marker to tell them apart. The figure is saved in the `FIGURES` folder
# and shown below in a notebook.

# %%
runs = {
    "snn.Leaky, ATan surrogate": history_atan,
    "snn.Leaky, localzo.make()": history_localzo,
    "snn.Leaky, localzo.make(delta=0.008)": history_sparse,
    "localzo.Leaky, localzo.make(delta=0.008)": history_fused,
}
fig = plots.training_figure(runs, title="Spike-encoded digits")
plots.save(fig, FIGURES / "01_training.png")
fig

# %% [markdown]
# ## Summary
#
# * `spike_grad=localzo.make()` is all it takes to train an snnTorch model with LocalZO;
#   the forward pass is unchanged.
# * `make(track=True)` and `.active_fraction` show how sparse the backward pass is.
# * `delta` trades sparsity against the width of the gradient signal.
# * `localzo.Leaky` is a drop-in for `snn.Leaky` that runs fused kernels on a GPU.
#
# Next: **Tutorial 2** opens the box and checks that the random estimate really is a
# surrogate gradient on average, including exact "twins" of snnTorch's own surrogates.

# %%
for name, h in runs.items():
    print(f"{name:<44} final test accuracy {100 * h['test_acc'][-1]:.2f}%")
