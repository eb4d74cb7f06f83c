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
# # Tutorial 6: from a trained ANN to an snnTorch network, with FTBC
#
# In this tutorial you will:
#
# * train an ordinary PyTorch network whose activations are **QCFS** (a quantized, clipped
#   ReLU that a spiking neuron can reproduce),
# * **convert** it into a spiking network made of `snn.Leaky` neurons,
# * see where plain conversion loses accuracy (few time steps) and measure its error layer
#   by layer and step by step,
# * **calibrate** it with FTBC, *forward temporal bias correction* (Wu et al., ECCV 2024),
#   which needs nothing but forward passes over some training data,
# * fine-tune the converted network for a few epochs with **LocalZO** at a small number of
#   time steps.
#
# **Why convert?** Training a spiking network directly (tutorials 1-3) needs backpropagation
# through time. Conversion takes a network trained as an ANN, which is fast and well
# understood, and turns every activation into an integrate-and-fire neuron whose *firing
# rate* approximates it. The price is latency: rates need many time steps to be accurate.
# FTBC adds to every spiking layer a small bias per time step and per channel, chosen so
# that at *every* step the layer fires on average what the ANN's activation outputs.
#
# ```bash
# pip install -e ".[tutorials]"   # from the root of a clone of this repository
# ```
#
# Everything here runs on a CPU in a couple of minutes; nothing is downloaded.

# %%
import os
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
import snntorch as snn

import snntorch_localzo as localzo
from snntorch_localzo import conversion
from snntorch_localzo.demo import plots
from snntorch_localzo.demo.ftbc import digits_task

# The test suite sets these two to run a tiny version of this notebook quickly.
FAST = os.environ.get("SNNTORCH_LOCALZO_TUTORIAL_FAST") == "1"
FIGURES = Path(os.environ.get("SNNTORCH_LOCALZO_FIGURES", "figures"))

device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
hidden = 64 if FAST else 256  # units per hidden layer
epochs = 15 if FAST else 60  # ANN training epochs
calib_size = 160 if FAST else 480  # samples per calibration batch
levels = 8  # QCFS quantization levels L
steps = [1, 2, 4, 8] if FAST else [1, 2, 4, 8, 16, 32]  # time steps to evaluate
T_MAX = steps[-1]
print(f"device: {device}, snnTorch {snn.__version__}, snntorch-localzo {localzo.__version__}")

# %% [markdown]
# ## 1. The data and an ordinary ANN
#
# scikit-learn's 1797 handwritten digits, 8x8 pixels scaled to [0, 1], split into 1437
# training and 360 test images. The ANN sees each image once; the spiking network will see
# the same image again at every time step (the input current of its first layer).

# %%
data = digits_task()
x_train, y_train = (t.to(device) for t in data.train.tensors)
x_test, y_test = (t.to(device) for t in data.test.tensors)
print("train:", tuple(x_train.shape), " test:", tuple(x_test.shape))

# %% [markdown]
# Start from the network you would write anyway, with ReLUs. `conversion.swap_relu` returns
# a copy in which every `nn.ReLU` is a `QCFS` activation:
#
# $$ a = \lambda \, \mathrm{clip}\left(\tfrac{1}{L}\left\lfloor \tfrac{z L}{\lambda} + \tfrac12 \right\rfloor, 0, 1\right) $$
#
# with a trainable threshold $\lambda$ per layer (initialised at 8) and $L$ levels. This is
# exactly the average output, over $L$ steps, of an integrate-and-fire neuron with
# threshold $\lambda$ that starts half-way to it: training with QCFS makes the ANN
# conversion-ready.

# %%
torch.manual_seed(0)
relu_net = nn.Sequential(
    nn.Flatten(),
    nn.Linear(64, hidden), nn.ReLU(),
    nn.Linear(hidden, hidden), nn.ReLU(),
    nn.Linear(hidden, hidden), nn.ReLU(),
    nn.Linear(hidden, 10),
)
ann = conversion.swap_relu(relu_net, levels=levels, lam=8.0).to(device)
print(ann)


# %%
def train_ann(model, epochs, lr=1e-3, batch_size=64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    for _ in range(epochs):
        order = torch.randperm(len(x_train), generator=gen).to(device)
        for i in range(0, len(order), batch_size):
            idx = order[i : i + batch_size]
            loss = F.cross_entropy(model(x_train[idx]), y_train[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()


@torch.no_grad()
def accuracy(model, **kwargs):
    return (model(x_test, **kwargs).argmax(1) == y_test).float().mean().item()


train_ann(ann, epochs)
ann.eval()
ann_acc = accuracy(ann)
print(f"QCFS ANN test accuracy: {100 * ann_acc:.2f}%")

# %% [markdown]
# ## 2. Convert
#
# `conversion.convert(ann)` builds a spiking copy: the same Linear layers (copied, the ANN is
# not touched), and in place of every QCFS an `IFNeuron`, a thin wrapper around
# `snn.Leaky(beta=1, reset_mechanism="subtract", threshold=lam, graded_spikes_factor=lam)`
# whose membrane starts at `lam / 2`. A spike is worth `lam`, so the average output of a
# spiking layer is directly comparable to the ANN's activation. `snn_net(x, num_steps=T)`
# feeds `x` at each of `T` steps and returns the mean output of the last layer.

# %%
snn_plain = conversion.convert(ann)
print(snn_plain)

# %% [markdown]
# A first check of the claim above: for `T = L` steps, the first spiking layer fires
# *exactly* the QCFS activation (wherever the input is not on a rounding tie).

# %%
first = conversion.convert(ann[:3])  # Flatten, Linear, QCFS
with torch.no_grad():
    same_as_qcfs = torch.equal(first(x_test, num_steps=levels), ann[:3](x_test))
print(f"T = L = {levels}: first spiking layer == QCFS activation:", same_as_qcfs)

# %% [markdown]
# ## 3. Plain conversion: accurate with enough steps, poor with few
#
# Deeper layers receive spike trains, not constant currents, and with few steps a neuron
# has no time to reach its rate: with `T = 1` a neuron fires only if its input exceeds half
# its threshold in a single step.

# %%
acc_plain = {T: accuracy(snn_plain, num_steps=T) for T in steps}
for T, a in acc_plain.items():
    print(f"plain conversion, T={T:>2}: {100 * a:.2f}%   (ANN {100 * ann_acc:.2f}%)")

# %% [markdown]
# FTBC looks at the error step by step. For layer $l$ and step $t$ its *expected conversion
# error* is, per channel, the difference between the mean spike output $\overline{s_l[t]}$
# and the mean ANN activation $\overline{a_l}$, averaged over the data;
# `conversion.conversion_error` returns its mean absolute value over channels for every layer
# and step (in the activation's units). We measure it on the data we will calibrate with:
# three batches of training images.

# %%
# calibration data: 3 batches of training images (never the test set)
order = torch.randperm(len(x_train), generator=torch.Generator().manual_seed(0)).to(device)
batches = [x_train[order[i * calib_size : (i + 1) * calib_size]] for i in range(3)]
err_plain = conversion.conversion_error(snn_plain, ann, batches, num_steps=T_MAX)
print("plain conversion error, layers x steps:\n", err_plain.numpy().round(3))

# %% [markdown]
# ## 4. FTBC: a bias per layer, step and channel, found in the forward pass
#
# `conversion.calibrate` goes through the layers in order and, in each, through the steps in
# order. At step $t$ it compares the layer's mean output with the ANN's and moves the bias:
#
# $$ b_l[t] \leftarrow b_l[t] - \alpha \left(\overline{s_l[t]} - \overline{a_l}\right) $$
#
# then fires step $t$ again with the new bias, a few times (a simple root finding), before
# going on to $t+1$ with the corrected membrane. Earlier layers and steps are already
# calibrated when a later one is. No gradient is computed. $\alpha = 0.5$ is the default of
# the authors' function (their script passes 0.4) and 3 batches their script's; 5 updates
# per step and batch is the library's default. The error printed is on the calibration
# batches, where FTBC minimises it; docs/conversion.md measures it on held-out data.
#
# We calibrate once for the largest `T`: the biases of the first `T'` steps do not depend on
# later steps, so the same network runs for any `T' <= T`.

# %%
snn_ftbc = conversion.convert(ann)
err_ftbc = conversion.calibrate(snn_ftbc, ann, batches, num_steps=T_MAX, alpha=0.5, iters=5,
                                num_batches=3)
print("residual error after FTBC, layers x steps:\n", err_ftbc.numpy().round(3))
print(f"mean error: plain {err_plain.mean():.4f} -> FTBC {err_ftbc.mean():.4f}")

# %%
fig = plots.figure(9, 3.2)
axes = fig.subplots(1, len(snn_ftbc.neurons), sharey=True)
for layer, ax in enumerate(axes):
    ax.plot(range(1, T_MAX + 1), err_plain[layer], marker="o", ms=3, label="plain")
    ax.plot(range(1, T_MAX + 1), err_ftbc[layer], marker="s", ms=3, label="FTBC")
    ax.set_yscale("log")
    ax.set_title(f"spiking layer {layer + 1}", fontsize=10)
    ax.set_xlabel("time step t")
    ax.grid(alpha=0.3)
axes[0].set_ylabel("mean |channel error|")
axes[0].legend(fontsize=8)
plots.save(fig, FIGURES / "06_residual.png")
fig

# %%
acc_ftbc = {T: accuracy(snn_ftbc, num_steps=T) for T in steps}
for T in steps:
    print(f"T={T:>2}: plain {100 * acc_plain[T]:6.2f}%   FTBC {100 * acc_ftbc[T]:6.2f}%   "
          f"(ANN {100 * ann_acc:.2f}%)")

# %% [markdown]
# The prefix property, checked: a network calibrated for 4 steps has exactly the first 4
# biases of the one calibrated for `T_MAX`, and gives the same outputs.

# %%
snn_short = conversion.convert(ann)
conversion.calibrate(snn_short, ann, batches, num_steps=4, num_batches=3)
prefix_equal = all(torch.equal(a.bias[:4], b.bias) for a, b in zip(snn_ftbc.neurons, snn_short.neurons))
with torch.no_grad():
    prefix_equal = prefix_equal and torch.equal(snn_ftbc(x_test, 4), snn_short(x_test, 4))
print("calibrated for T_MAX, run for 4 == calibrated for 4:", prefix_equal)

# %%
fig = plots.curves_figure(
    {"plain conversion": [100 * acc_plain[T] for T in steps],
     "FTBC": [100 * acc_ftbc[T] for T in steps]},
    ylabel="test accuracy %", xlabel="time steps T", x=steps,
    title=f"MLP 64-{hidden}x3-10, QCFS L={levels}; ANN {100 * ann_acc:.1f}%",
)
fig.axes[0].axhline(100 * ann_acc, color="k", ls="--", lw=1)
fig.axes[0].set_xscale("log", base=2)
plots.save(fig, FIGURES / "06_accuracy.png")
fig

# %% [markdown]
# ## 5. The biases are part of the model
#
# They are buffers of shape `[T, channels]` (`layers.<i>.bias`), so `state_dict`,
# `torch.save` and `load_state_dict` carry them; a network converted afresh from the same
# ANN takes them. Running more steps than were calibrated is an error, not a silent guess.

# %%
state = snn_ftbc.state_dict()
print({k: tuple(v.shape) for k, v in state.items() if k.endswith(".bias") and v.dim() == 2})
restored = conversion.convert(ann)
restored.load_state_dict(state)
with torch.no_grad():
    restored_equal = torch.equal(restored(x_test, 4), snn_ftbc(x_test, 4))
print("restored network gives the same outputs:", restored_equal)
try:
    snn_ftbc(x_test, num_steps=T_MAX + 1)
except ValueError as err:
    print("ValueError:", err)

# %% [markdown]
# ## 6. Fine-tuning with LocalZO at a small T
#
# A converted network is an snnTorch network like any other, so it can be trained further
# with backpropagation through time. `convert(ann, neuron=...)` takes any neuron class with
# `snn.Leaky`'s arguments: with `localzo.Leaky` the spike gradient is LocalZO's sparse
# estimate. Here `delta` is 5% of each layer's threshold (the membranes live on the scale
# of `lam`, not 1). We load the calibrated state (weights, thresholds, biases) and train at
# `T = 2`, where conversion alone is weakest; the biases stay fixed.

# %%
T_TUNE = 2


def localzo_neuron(**kwargs):
    return localzo.Leaky(spike_grad=localzo.make(delta=0.05 * kwargs["threshold"], track=True),
                         **kwargs)


tuned = conversion.convert(ann, neuron=localzo_neuron).to(device)
tuned.load_state_dict(snn_ftbc.state_dict())
acc_before = accuracy(tuned, num_steps=T_TUNE)
opt = torch.optim.Adam(tuned.parameters(), 1e-3)
gen = torch.Generator().manual_seed(0)
tune_history = {"loss": [], "test_acc": [], "active": []}
for epoch in range(1 if FAST else 5):
    for n in tuned.neurons:
        n.neuron.spike_grad.reset_stats()
    total = 0.0
    order = torch.randperm(len(x_train), generator=gen).to(device)
    for i in range(0, len(order), 64):
        idx = order[i : i + 64]
        loss = F.cross_entropy(tuned(x_train[idx], num_steps=T_TUNE), y_train[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        total += loss.item() * len(idx)
    tune_history["loss"].append(total / len(order))
    tune_history["test_acc"].append(accuracy(tuned, num_steps=T_TUNE))
    tune_history["active"].append(
        sum(n.neuron.spike_grad.active_fraction for n in tuned.neurons) / len(tuned.neurons))
    print(f"epoch {epoch + 1}: loss {tune_history['loss'][-1]:.3f}, test accuracy at T={T_TUNE} "
          f"{100 * tune_history['test_acc'][-1]:.2f}%, non-zero spike gradients "
          f"{100 * tune_history['active'][-1]:.2f}%")
print(f"T={T_TUNE}: FTBC {100 * acc_before:.2f}% -> after LocalZO fine-tuning "
      f"{100 * tune_history['test_acc'][-1]:.2f}%")

# %% [markdown]
# A few epochs recover much of what conversion loses at `T = 2`, with only a few percent of
# the spiking neurons receiving a gradient. (The benchmark in the README repeats this for 5
# seeds and both networks.)
#
# ## 7. Your own data and the command line
#
# `snntorch_localzo.conversion.data` reads image data already on disk, without torchvision:
# `ImageFolder(root, size=...)` (one folder per class, ImageNet's layout), `load_cifar(root,
# train=...)` (CIFAR-10/100 python version) and `load_arrays("x_and_y.npz")`. They return
# PyTorch datasets; pass their `DataLoader` to `calibrate` as `data` (the first
# `num_batches` batches are used). The whole pipeline of this notebook is also one command:
#
# ```bash
# snntorch-localzo ftbc                                   # digits, MLP, L=8
# snntorch-localzo ftbc --net conv --runs 5 --released --finetune 2,4
# snntorch-localzo ftbc --data cifar:~/data/cifar-10-batches-py --net conv --device cuda
# snntorch-localzo ftbc --data folder:~/data/imagenet --image-size 64 --net conv --device cuda
# ```
#
# ## Summary
#
# * `conversion.swap_relu` + ordinary training give a conversion-ready QCFS ANN.
# * `conversion.convert` makes an snnTorch network of the same weights; with `T = L` its
#   first layer reproduces QCFS exactly, with few steps it loses accuracy.
# * `conversion.calibrate` (FTBC) removes the per-step, per-channel error in the forward
#   pass only, and the calibrated biases travel in the `state_dict`.
# * `neuron=localzo.Leaky` turns the converted network into one that trains with LocalZO.

# %%
print(f"ANN {100 * ann_acc:.2f}%")
for T in steps:
    print(f"T={T:>2}: plain {100 * acc_plain[T]:6.2f}%  FTBC {100 * acc_ftbc[T]:6.2f}%")
