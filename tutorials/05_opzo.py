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
# # Tutorial 5: training without a backward pass (OPZO)
#
# In this tutorial you will:
#
# * train an ordinary snnTorch network with **OPZO**, online pseudo-zeroth-order training
#   (Xiao et al., arXiv:2407.12516, ICLR 2026): one forward pass per time step, no
#   backward pass through the layers, no autograd graph, memory that does not grow with
#   the sequence length;
# * see how its *feedback matrices* learn the network's Jacobian from noise;
# * compare it, in the same trainer, with OTTT's exact online gradient, with direct
#   feedback alignment (DFA) and with plain zeroth-order learning;
# * combine it with LocalZO, so that only neurons near threshold learn.
#
# **The idea in four lines.** At every time step the network runs forward once, with a
# little noise $\alpha z_l$ added to the spikes each hidden layer $l$ sends on. The
# gradient of the loss at the output, $e = \partial L / \partial o$, is exact (for
# cross-entropy, softmax minus one-hot): only the network is treated as a black box,
# hence *pseudo* zeroth order. A feedback matrix per layer averages what the noise did to
# the output, $M_l \leftarrow \lambda M_l + (1-\lambda)\,\overline{z_l \tilde o^\top}/\alpha$,
# which estimates the transpose Jacobian $\partial o / \partial s_l$, and sends the error
# straight down: $g_l = M_l e$. Each synapse then updates with three local factors, as in
# OTTT: the presynaptic trace $\hat a$, the neuron's spike derivative $\psi(u)$ and the
# top-down signal $g$.
#
# LocalZO (tutorials 1 to 4) answers *how much does a spike change with the membrane*
# ($\psi$); OPZO answers *which way should a hidden neuron move* (the spatial credit
# assignment). Section 6 uses both.
#
# Everything here runs on a CPU in a few minutes; nothing is downloaded.

# %%
import os
import time
from pathlib import Path

import torch
import torch.nn as nn
import snntorch as snn
import snntorch.utils

import snntorch_localzo as localzo
from snntorch_localzo import opzo
from snntorch_localzo.demo import plots
from snntorch_localzo.demo.data import spiking_digits

# The test suite sets these two to run a tiny version of this notebook quickly.
FAST = os.environ.get("SNNTORCH_LOCALZO_TUTORIAL_FAST") == "1"
FIGURES = Path(os.environ.get("SNNTORCH_LOCALZO_FIGURES", "figures"))

torch.set_num_threads(1)  # small matrices: one thread is fastest on a CPU
device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
num_steps = 8  # time steps per sample
hidden = [64, 64] if FAST else [256, 256, 256, 128]  # a deep network: where DFA falls behind
num_epochs = 3 if FAST else 8
print(f"device: {device}, snnTorch {snn.__version__}, snntorch-localzo {localzo.__version__}")

# %% [markdown]
# ## 1. Data and an snnTorch network
#
# The digits of scikit-learn as spike trains (rate coding, `[time, samples, 64]`), and a
# network written the snnTorch way: an `nn.Sequential` of `nn.Linear` layers each followed
# by an `snn.Leaky` with `init_hidden=True`, and a plain `nn.Linear` *readout* last, whose
# output at every time step is the network's output $o[t]$.

# %%
data = spiking_digits(num_steps=num_steps, seed=0, device=device)
if FAST:  # a few hundred samples are enough to check that everything runs
    data = data._replace(x_train=data.x_train[:, :600], y_train=data.y_train[:600])
print("train:", tuple(data.x_train.shape), " test:", tuple(data.x_test.shape))


def make_net(seed=0):
    torch.manual_seed(seed)
    layers = []
    for n_in, n_out in zip([64] + hidden, hidden):
        layers += [nn.Linear(n_in, n_out), snn.Leaky(beta=0.9, init_hidden=True)]
    layers.append(nn.Linear(hidden[-1], 10))  # the readout: no neuron after it
    return nn.Sequential(*layers).to(device)


net = make_net()
print(net)

# %% [markdown]
# ## 2. The trainer
#
# `opzo.OPZO(net, optimizer, ...)` takes the network as it is. It walks the layers and
# refuses, with an error naming the module, anything it cannot train correctly
# (recurrent neurons, batch norm, residual blocks, ...). `trainer.train_step(x, y)` trains
# on one batch of sequences and returns its loss and accuracy; `trainer.predict(x)` runs
# without noise and returns the readout averaged over time.
#
# The trainer calls snnTorch's own modules for the forward pass. Without noise the
# forward is *exactly* snnTorch's: let us check it on the test set.

# %%
trainer = opzo.OPZO(net, torch.optim.Adam(net.parameters(), lr=1e-3))
print(trainer)

with torch.no_grad():
    snntorch.utils.reset(net)  # snnTorch's way: reset the states, then step through time
    total = net(data.x_test[0]).clone()
    for t in range(1, num_steps):
        total += net(data.x_test[t])
    same_forward = torch.equal(trainer.predict(data.x_test), total / num_steps)
print("predict() equals running the snnTorch network:", same_forward)

# %% [markdown]
# ## 3. Feedback matrices learn the Jacobian from noise
#
# The heart of OPZO is the estimate $M \approx J^\top$. On a fixed linear map
# $o = A s$ we know the answer, $J^\top = A^\top$, so we can watch the estimate converge.
# `opzo.NoiseStream` draws the noise (Gaussian here; Rademacher and sphere also work) and
# `opzo.momentum_update` is the update the trainer uses. With **dual noise** the trainer
# injects $+z$ at one step and $-z$ at the next: the term $z o^\top/\alpha$, zero on
# average but large, cancels within each pair, and the estimate converges much faster.

# %%
def cosine(a, b):
    return float((a * b).sum() / (a.norm() * b.norm()))


def estimate(dual, steps, alpha=0.1, momentum=0.999, seed=0):
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(10, 64, generator=g)  # the "network": 64 inputs -> 10 outputs
    s = torch.rand(32, 64, generator=g)  # a fixed batch of activities
    stream = opzo.NoiseStream("gaussian", dual, g)
    M = torch.zeros(64, 10)
    curve = []
    for k in range(steps):
        z = stream.next(s)
        opzo.momentum_update(M, z, (s + alpha * z) @ A.t(), alpha, momentum)
        if (k + 1) % 50 == 0:
            curve.append((k + 1, cosine(M, A.t())))
    return curve


est_steps = 500 if FAST else 4000
cos_dual = estimate(True, est_steps)
cos_single = estimate(False, est_steps)
print(f"cosine(M, A^T) after {est_steps} steps: dual noise {cos_dual[-1][1]:.4f}, "
      f"independent noise {cos_single[-1][1]:.4f}")

fig = plots.figure(5.5, 3.2)
ax = fig.subplots()
for curve, label in ((cos_dual, "dual noise (+z, -z)"), (cos_single, "independent noise")):
    ax.plot([k for k, _ in curve], [c for _, c in curve], label=label)
ax.set_xlabel("updates of M")
ax.set_ylabel("cosine(M, true $J^T$)")
ax.set_title("Momentum feedback on a linear map (alpha 0.1, lambda 0.999)")
ax.legend()
ax.grid(alpha=0.3)
plots.save(fig, FIGURES / "05_feedback_estimate.png")
fig

# %% [markdown]
# In a spiking network the map is not linear and changes as the weights learn, so the
# matrices estimate the Jacobian *averaged over the data* (and of the noise-smoothed
# network, since a spike only reacts to noise near its threshold). That average is the
# price of having no backward pass.
#
# ## 4. OPZO against its baselines, in one trainer
#
# The `feedback` argument picks the spatial credit assignment; everything else (forward,
# presynaptic traces, local factor, optimizer) is shared:
#
# | `feedback` | top-down signal $g_l$ | what it needs |
# |---|---|---|
# | `"momentum"` | $M_l e$, $M_l$ estimated from noise with momentum (OPZO) | noise, one forward pass |
# | `"backprop"` | the exact spatial gradient through the layers at each step (OTTT) | symmetric weights, a backward pass per step |
# | `"random"` | $B_l e$ with a fixed random $B_l$ (direct feedback alignment) | nothing |
# | `"zo"` | node perturbation: $(L(\tilde o) - L(o))\, z_l / \alpha$, from the scalar loss change alone (each sample also runs noise-free) | noise, two forward passes |
#
# We train each from the same initial weights, with the noise of the project's
# benchmark (`benchmarks/opzo.py`: noise scale $\alpha = 0.3$, momentum $\lambda = 0.999$,
# chosen on a validation split; Adam, batch 32; the benchmark's fc net also uses beta 0.5,
# a sigmoid local factor of slope 4 and initial weights times 3). Every presentation of a
# sample draws fresh input spikes (`data.train_batch`, snnTorch's convention).

# %%
def train(feedback, epochs=num_epochs, batch_size=32, seed=0, **options):
    net = make_net(seed)
    if feedback in ("momentum", "zo"):
        options = {"noise_std": 0.3, "momentum": 0.999, **options}
    trainer = opzo.OPZO(net, torch.optim.Adam(net.parameters(), lr=1e-3), feedback=feedback,
                        **options)
    history = {"loss": [], "test_acc": [], "s_per_epoch": []}
    n = data.x_train.shape[1]
    torch.manual_seed(seed)
    for epoch in range(epochs):
        start, losses = time.perf_counter(), []
        order = torch.randperm(n, device=device)
        for first in range(0, n, batch_size):
            idx = order[first:first + batch_size]
            losses.append(trainer.train_step(data.train_batch(idx), data.y_train[idx]).loss)
        history["s_per_epoch"].append(time.perf_counter() - start)
        history["loss"].append(sum(losses) / len(losses))
        history["test_acc"].append(trainer.evaluate(data.x_test, data.y_test))
    print(f"{feedback:>9}: test accuracy {100 * history['test_acc'][-1]:.2f}% after {epochs} "
          f"epochs, {history['s_per_epoch'][-1]:.2f} s/epoch")
    return history, trainer


histories = {}
for feedback in ("momentum", "backprop", "random", "zo"):
    histories[feedback], _ = train(feedback)

# %%
names = {"momentum": "OPZO", "backprop": "OTTT (backprop)", "random": "DFA", "zo": "ZO"}
fig = plots.curves_figure({names[k]: h["test_acc"] for k, h in histories.items()},
                          "test accuracy %", title=f"64-{'-'.join(map(str, hidden))}-10 Leaky, "
                          f"T={num_steps}", scale=100.0)
plots.save(fig, FIGURES / "05_training.png")
fig

# %% [markdown]
# What to expect (the benchmark runs 5 seeds; see the README's OPZO section): the exact
# online gradient is the upper bound, and OPZO comes within about 1.7 points of it on the
# deep fully connected network without any backward pass, slightly ahead of DFA and far
# ahead of zeroth-order
# learning by node perturbation, whose estimate from one scalar loss change per sample is
# mostly noise in a network this wide. OPZO estimates the Jacobian of the network as it
# is, with hard spikes: a layer whose downstream layers are silent gets no signal, which
# is why the benchmark's fc net starts from larger initial weights (see docs/opzo.md).
#
# ## 5. Constant memory in the sequence length
#
# Backpropagation through time keeps every time step's activations until the backward
# pass; OPZO keeps a fixed set of tensors per layer (the state, the traces, the feedback
# matrices) whatever the length. We measure the peak memory of one training step with
# PyTorch's profiler for two lengths, against snnTorch's usual training (autograd through
# time) of the same network.

# %%
import itertools
from torch.profiler import ProfilerActivity, profile


def peak_mib(fn):
    if device.type == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted(prof.profiler.kineto_results.events(), key=lambda e: e.start_ns())
    sizes = [e.nbytes() for e in events if e.name() == "[memory]"]
    return max(itertools.accumulate(sizes), default=0) / 2**20


def bptt_step(net, optimizer, x, y):
    for lif in net:  # back to rest (snntorch.utils.reset would reset every Leaky ever made)
        if isinstance(lif, snn.Leaky):
            lif.reset_mem()
    loss = sum(nn.functional.cross_entropy(net(x[t]), y) for t in range(x.shape[0]))
    optimizer.zero_grad()
    (loss / x.shape[0]).backward()
    optimizer.step()


peak = {}
for T in (8, 64):
    x = (torch.rand(T, 32, 64, device=device) < 0.3).float()
    y = torch.arange(32, device=device) % 10
    net = make_net()
    trainer = opzo.OPZO(net, torch.optim.Adam(net.parameters(), lr=1e-3))
    trainer.train_step(x, y)  # warm-up (optimizer state)
    peak[("OPZO", T)] = peak_mib(lambda: trainer.train_step(x, y))
    net = make_net()
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    bptt_step(net, optimizer, x, y)
    peak[("BPTT", T)] = peak_mib(lambda: bptt_step(net, optimizer, x, y))
for (name, T), mib in peak.items():
    print(f"{name:>5}, T={T:<3}: peak {mib:7.2f} MiB during a training step")

# %% [markdown]
# The test suite checks the same thing more strictly (`tests/test_opzo.py`): in a fresh
# process, the live tensors during a sequence of 200 steps are exactly those of a
# sequence of 10, and no tensor produced in a training step carries an autograd graph.
#
# ## 6. Sparse three-factor learning with LocalZO
#
# The local factor $\psi(u)$ defaults to each neuron's own `spike_grad` (here snnTorch's
# arctangent surrogate, non-zero everywhere). Pass `local_grad=localzo.make(...)` and
# $\psi$ becomes one draw of the LocalZO estimate: exactly zero unless the membrane is
# within $\delta |z|$ of the threshold. A synapse then changes only when its neuron is
# near threshold, and the estimate's meter counts how many were.

# %%
spike_grad = localzo.make(delta=0.05, track=True)
history_localzo, trainer_localzo = train("momentum", local_grad=spike_grad)
active = spike_grad.active_fraction  # over the whole training
print(f"OPZO with LocalZO's psi: {100 * history_localzo['test_acc'][-1]:.2f}% test accuracy, "
      f"{100 * active:.2f}% of the hidden neurons updated per step on average")

# %% [markdown]
# ## 7. Saving, and what else to try
#
# The feedback matrices are buffers of the trainer, so `trainer.state_dict()` holds them
# with the network's weights: training resumes where it stopped. The network itself is
# still a plain snnTorch model, usable without this package.

# %%
state = trainer_localzo.state_dict()
print(sorted(k for k in state if k.startswith("feedback")))

# %% [markdown]
# Options of `opzo.OPZO` to explore: `noise="rademacher"` (hardware-friendly $\pm 1$
# noise), `perturb="membrane"` (noise in the neuron's input current), `dual_noise=False`,
# `loss="mse"`, `update="step"` (an optimizer step at every time step, fully online), and
# conv nets (`nn.Conv2d`, `nn.AvgPool2d`, `nn.Flatten`). From the command line:
#
# ```bash
# snntorch-localzo opzo --epochs 10 --runs 3                 # all four methods, 3 seeds
# snntorch-localzo opzo --feedback momentum --local-grad localzo
# ```
