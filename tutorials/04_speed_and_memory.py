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
# # Tutorial 4: measure speed and memory on your own machine
#
# LocalZO's promise is a cheaper backward pass: most spike gradients are exactly zero,
# so fused, sparse code can skip most of the work: Triton kernels on a GPU, the native
# path on a CPU. Whether that pays off depends on your hardware, your network and your
# sequence length, so this tutorial shows you how to **measure it yourself**, fairly:
#
# * forward and backward time, each timed after warm-up (CUDA events on a GPU),
# * memory: the peak GPU memory of a training step (`torch.cuda.max_memory_allocated`),
#   and on any device what autograd keeps between the passes,
# * the fraction of neurons that received a gradient,
#
# for the same three-layer network written five ways: snnTorch's step loop with its ATan
# surrogate, the same loop with `spike_grad=localzo.make()`, the step loop with
# `localzo.Leaky`, `nn.Linear` + `localzo.Leaky.forward_sequence`, and the sparse
# `localzo.LinearLeaky`.
#
# **On a CPU** the LocalZO variants run the native CPU path (the Triton kernels need a
# CUDA GPU): CPU timings tell you what LocalZO buys on a laptop, not what the GPU
# kernels do. Run it on a machine with a CUDA GPU for those.

# %%
import os
import statistics
from pathlib import Path

import torch
import torch.nn as nn
import snntorch as snn
from snntorch import surrogate

import snntorch_localzo as localzo
from snntorch_localzo.demo import plots

FAST = os.environ.get("SNNTORCH_LOCALZO_TUTORIAL_FAST") == "1"
FIGURES = Path(os.environ.get("SNNTORCH_LOCALZO_FIGURES", "figures"))

device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
if FAST:
    num_steps, batch_size, hidden, repeats, warmup = 4, 4, 72, 2, 1
elif device.type == "cuda":
    num_steps, batch_size, hidden, repeats, warmup = 100, 128, 256, 10, 3
else:
    num_steps, batch_size, hidden, repeats, warmup = 25, 32, 128, 3, 1
n_in, n_out = 700, 20  # the shape of the Spiking Heidelberg Digits

if device.type == "cuda":
    torch.backends.cuda.matmul.allow_tf32 = False  # compare in full float32
    print("GPU:", torch.cuda.get_device_name(device))
else:
    print("No CUDA GPU: the LocalZO variants run the native CPU path.\n"
          "These timings are the CPU's; run this on a GPU for the kernels'.")
print(f"T={num_steps}, batch={batch_size}, {n_in}-{hidden}-{hidden}-{n_out}")

# %% [markdown]
# ## 1. One network, five implementations
#
# The network: three fully connected layers, each followed by a Leaky neuron
# (`beta=0.9`, subtractive reset), input spikes with probability 0.05, and a
# cross-entropy loss on the output spike counts.
#
# The step-loop version is plain snnTorch. The two sequence versions take the whole
# `[time, batch, features]` tensor per layer.

# %%
# The three network shapes are defined once in the package (the benchmarks use the same):
# `StepMLP` calls every layer once per time step, `SequenceMLP` calls each layer once on
# the whole sequence (here `nn.Linear` + `Leaky.forward_sequence`, or `LinearLeaky`).
from snntorch_localzo.demo.models import LinearThenSequence, SequenceMLP, SpikesOf, StepMLP

sizes = [n_in, hidden, hidden, n_out]


def build(name):
    """A fresh model; torch.manual_seed(0) gives every variant the same weights."""
    torch.manual_seed(0)
    atan, sg = surrogate.atan(), localzo.make()
    models = {
        "snn.Leaky loop, ATan": lambda: StepMLP(sizes, lambda: snn.Leaky(beta=0.9, spike_grad=atan)),
        "snn.Leaky loop, localzo.make()": lambda: StepMLP(sizes, lambda: snn.Leaky(beta=0.9, spike_grad=sg)),
        "localzo.Leaky loop": lambda: StepMLP(sizes, lambda: localzo.Leaky(beta=0.9, spike_grad=sg)),
        "Linear + forward_sequence": lambda: SequenceMLP(sizes, lambda a, b: LinearThenSequence(a, b, sg)),
        "localzo.LinearLeaky": lambda: SequenceMLP(
            sizes, lambda a, b: SpikesOf(localzo.LinearLeaky(0.9, a, b, spike_grad=sg))),
    }
    return models[name]().to(device)


names = ["snn.Leaky loop, ATan", "snn.Leaky loop, localzo.make()", "localzo.Leaky loop",
         "Linear + forward_sequence", "localzo.LinearLeaky"]
gen = torch.Generator().manual_seed(0)
x = (torch.rand(num_steps, batch_size, n_in, generator=gen) < 0.05).float().to(device)
y = torch.randint(0, n_out, (batch_size,), generator=gen).to(device)

# %% [markdown]
# Before timing anything, check that the five are the same network: the forward pass
# must give identical output spike counts (LocalZO changes only the backward).

# %%
with torch.no_grad():
    outputs = {name: build(name)(x) for name in names}
same_forward = all(torch.equal(outputs[names[0]], out) for out in outputs.values())
print("identical forward outputs:", same_forward)

# %% [markdown]
# ## 2. Timing it right
#
# GPU work is asynchronous: `loss.backward()` returns before the GPU has finished. So we
# time with **CUDA events** recorded into the stream and wait for the end event before
# reading it; we run a few **warm-up** steps first (the first calls compile Triton kernels
# and fill caches) and report the **median** of several repeats. Memory: reset the peak
# counter, note what is allocated before the step, and report the peak above it. On a
# CPU, the wall clock stands in for the events.
#
# The package's `time_training_steps` does exactly this (the benchmarks use it too; read
# it in `snntorch_localzo/demo/timing.py`, about thirty lines): it runs `warmup + repeats`
# training steps and returns the forward and backward milliseconds and, on a GPU, the
# peak MiB of each measured step.

# %%
from snntorch_localzo.demo.timing import time_training_steps


def measure(model):
    fwd, bwd, peak = time_training_steps(model, nn.CrossEntropyLoss(), x, y, device=device,
                                         warmup=warmup, repeats=repeats)
    return {
        "fwd_ms": statistics.median(fwd),
        "bwd_ms": statistics.median(bwd),
        "peak_mib": statistics.median(peak) if peak else float("nan"),
    }


def active_fraction(model):
    """One more step with the sparsity meters switched on (not timed)."""
    grads = {id(m.spike_grad): m.spike_grad for m in model.modules()
             if isinstance(getattr(m, "spike_grad", None), localzo.LocalZO)}
    if not grads:
        return 1.0  # a surrogate gradient is non-zero everywhere
    for sg in grads.values():
        sg.track = True
    nn.CrossEntropyLoss()(model(x), y).backward()
    meters = [sg.meter for sg in grads.values()]
    return sum(m.active for m in meters) / sum(m.total for m in meters)


results = {}
for name in names:
    model = build(name)
    results[name] = measure(model)
    results[name]["active"] = active_fraction(model)
    del model

# %% [markdown]
# ## 3. Results
#
# Times in milliseconds for one training step, and the ratio against the snnTorch step
# loop with ATan (above 1 means faster).

# %%
base = results[names[0]]
print(f"{'implementation':<32}{'fwd ms':>9}{'bwd ms':>9}{'peak MiB':>10}{'active %':>10}"
      f"{'fwd x':>7}{'bwd x':>7}")
for name, r in results.items():
    peak = f"{r['peak_mib']:.1f}" if device.type == "cuda" else "n/a"
    print(f"{name:<32}{r['fwd_ms']:>9.2f}{r['bwd_ms']:>9.2f}{peak:>10}"
          f"{100 * r['active']:>10.2f}{base['fwd_ms'] / r['fwd_ms']:>7.1f}"
          f"{base['bwd_ms'] / r['bwd_ms']:>7.1f}")

# %%
panels = [
    dict(values=[r["fwd_ms"] for r in results.values()], xlabel="forward ms"),
    dict(values=[r["bwd_ms"] for r in results.values()], xlabel="backward ms"),
]
if device.type == "cuda":
    panels.append(dict(values=[r["peak_mib"] for r in results.values()], xlabel="peak MiB"))
where = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (native path)"
fig = plots.bars_figure(names, panels,
                        title=f"One training step, T={num_steps}, batch {batch_size}, {where}")
plots.save(fig, FIGURES / "04_speed_memory.png")
fig

# %% [markdown]
# ## Reading the numbers
#
# * **Step loop vs sequence layers.** In the step loop every layer and time step runs a
#   handful of small operations; for long sequences this overhead, not arithmetic, tends
#   to set the time. `forward_sequence` and `LinearLeaky` run the time loop once per
#   layer and pass (inside one kernel on a GPU), which removes that overhead: compare
#   them at several `num_steps` to see how the gap changes on your machine.
# * **The backward.** `LinearLeaky`'s weight gradient only visits the active entries (the
#   `active %` column), so its work follows that fraction rather than the layer size;
#   on the CPU its input gradient too. `localzo.Leaky` keeps one byte per neuron and step
#   between the passes on a GPU (only the active entries on the CPU) instead of a float
#   copy of the membrane; the peak MiB column shows how much of that reaches the peak of
#   a whole training step on your GPU.
# * **Same network, same forward.** We checked above that all five compute the same
#   outputs; only the backward differs between ATan and LocalZO.
#
# To measure your own model, replace `build` with your network and keep `measure`. Try
# several `num_steps` and `hidden` sizes: sparse and fused kernels help most when the
# sequences are long and the layers wide.

# %%
print("measured on:", where)
