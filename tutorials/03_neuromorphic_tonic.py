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
# # Tutorial 3: event-camera data with tonic, trained on whole sequences
#
# Spiking networks shine on data that is already made of spikes: the output of an event
# camera or a silicon cochlea. In this tutorial you will:
#
# * load N-MNIST with [tonic](https://tonic.readthedocs.io) and turn its events into
#   frames with tonic's transforms,
# * build a network from the **sequence layers** of snntorch-localzo, which process all
#   time steps in one call (`localzo.LinearLeaky`, and `nn.Linear` +
#   `localzo.Leaky.forward_sequence`),
# * train it with LocalZO, on a GPU when you have one, and watch how sparse the backward
#   pass stays.
#
# **About the data.** N-MNIST is the MNIST digits recorded by an event camera that moves
# in three quick saccades in front of each digit; the download is large. This notebook
# uses the real dataset when it is already on disk under `DATA_DIR`, or when you ask for
# the download by setting `DOWNLOAD = True` (or the environment variable
# `SNNTORCH_LOCALZO_DOWNLOAD=1`). Otherwise it *generates* recordings the same way
# N-MNIST was made, from scikit-learn's 8x8 digits: a simulated sensor moves in three
# saccades in front of each digit, on the same 34x34 sensor, and writes events in
# exactly the format tonic returns. Everything after that point, transforms, caching,
# loaders, network and training, is the same code for both.

# %%
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import tonic
import tonic.transforms as transforms

import snntorch_localzo as localzo
from snntorch_localzo.demo import plots
from snntorch_localzo.demo.data import moving_digit_events

FAST = os.environ.get("SNNTORCH_LOCALZO_TUTORIAL_FAST") == "1"
FIGURES = Path(os.environ.get("SNNTORCH_LOCALZO_FIGURES", "figures"))
DATA_DIR = Path(os.environ.get("SNNTORCH_LOCALZO_DATA", "data"))
DOWNLOAD = os.environ.get("SNNTORCH_LOCALZO_DOWNLOAD") == "1"  # set to True to fetch N-MNIST

device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
num_steps = 10 if FAST else 25  # frames per recording
hidden = 64 if FAST else 256
num_epochs = 3 if FAST else 5
batch_size = 32 if FAST else 128
print(f"device: {device}, tonic {tonic.__version__}")

# %% [markdown]
# ## 1. Events
#
# tonic returns each recording as a numpy *structured array*: one record per event, with
# the pixel `x`, `y`, the time `t` in microseconds and the polarity `p` (1 when the
# pixel got brighter, 0 when it got darker). The sensor is 34x34 pixels with two
# polarities.
#
# Here we pick the source. `GeneratedNMNIST` stands in for `tonic.datasets.NMNIST`: it
# has the same sensor size, returns `(events, target)` pairs and applies a `transform`
# to the events, so the rest of the notebook cannot tell the difference.

# %%
sensor_size = tonic.datasets.NMNIST.sensor_size  # (34, 34, 2)
on_disk = all((DATA_DIR / "NMNIST" / f).exists() for f in ("train.zip", "test.zip"))
USE_REAL = DOWNLOAD or on_disk


class GeneratedNMNIST(torch.utils.data.Dataset):
    """Event recordings generated from scikit-learn's digits, in N-MNIST's format."""

    sensor_size = sensor_size

    def __init__(self, train=True, transform=None, num_samples=1000):
        split = "train" if train else "test"
        self.events, self.targets = moving_digit_events(num_samples, split=split,
                                                        seed=0 if train else 1)
        self.transform = transform

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, index):
        events = self.events[index]
        if self.transform is not None:
            events = self.transform(events)
        return events, int(self.targets[index])


if USE_REAL:
    raw = tonic.datasets.NMNIST(save_to=str(DATA_DIR), train=True)
    print(f"N-MNIST from {DATA_DIR}: {len(raw)} training recordings")
else:
    raw = GeneratedNMNIST(train=True, num_samples=8)
    print("N-MNIST not found: using recordings generated from scikit-learn's digits")

events, target = raw[0]
print("label:", target, " events:", len(events), " fields:", events.dtype.names)
print(events[:5])

# %% [markdown]
# ## 2. From events to frames with tonic's transforms
#
# A network steps through time, so we bin the events into a fixed number of frames:
# `ToFrame(n_time_bins=num_steps)` counts, for each frame, the events of each pixel and
# polarity. Before that, `Denoise` drops isolated events that have no neighbour within
# 10 ms, the typical sensor noise. The result has shape `[time, polarity, height, width]`.

# %%
transform = transforms.Compose([
    transforms.Denoise(filter_time=10000),
    transforms.ToFrame(sensor_size=sensor_size, n_time_bins=num_steps),
])
frames = transform(events)
print("frames:", frames.shape, frames.dtype, " events kept:", int(frames.sum()), "of", len(events))

fig_frames = plots.figure(9, 2)
shown = list(range(0, num_steps, max(1, num_steps // 6)))[:6]
for i, step in enumerate(shown):
    ax = fig_frames.add_subplot(1, len(shown), i + 1)
    ax.imshow(frames[step, 1].astype(float) - frames[step, 0], cmap="coolwarm", vmin=-3, vmax=3)
    ax.set_title(f"frame {step}", fontsize=8)
    ax.axis("off")
fig_frames.suptitle(f"ON (red) minus OFF (blue) events, label {target}", fontsize=9)
plots.save(fig_frames, FIGURES / "03_frames.png")
fig_frames

# %% [markdown]
# Now the full training and test sets, with the transform attached. Converting events
# to frames takes time, so we do it once: tonic's `MemoryCachedDataset` keeps the frames
# in memory after their first use (for all of N-MNIST that would be too much memory;
# `DiskCachedDataset` keeps them on disk instead). The loaders then give batches of
# shape `[batch, time, 2, 34, 34]`.

# %%
if USE_REAL:
    train_set = tonic.datasets.NMNIST(save_to=str(DATA_DIR), train=True, transform=transform)
    test_set = tonic.datasets.NMNIST(save_to=str(DATA_DIR), train=False, transform=transform)
    if FAST:  # a small subset, to try the pipeline
        train_set = torch.utils.data.Subset(train_set, range(0, len(train_set), 200))
        test_set = torch.utils.data.Subset(test_set, range(0, len(test_set), 100))
    cache = DATA_DIR / "cache" / f"nmnist_{num_steps}"
    train_set = tonic.DiskCachedDataset(train_set, cache_path=str(cache / "train"))
    test_set = tonic.DiskCachedDataset(test_set, cache_path=str(cache / "test"))
else:
    train_set = GeneratedNMNIST(train=True, transform=transform, num_samples=300 if FAST else 2000)
    test_set = GeneratedNMNIST(train=False, transform=transform, num_samples=100 if FAST else 500)
    train_set = tonic.MemoryCachedDataset(train_set)
    test_set = tonic.MemoryCachedDataset(test_set)

train_loader = torch.utils.data.DataLoader(train_set, batch_size=batch_size, shuffle=True)
test_loader = torch.utils.data.DataLoader(test_set, batch_size=256)
frames, targets = next(iter(train_loader))
print("a batch:", tuple(frames.shape), " targets:", tuple(targets.shape))


def to_sequence(frames):
    """[batch, time, 2, 34, 34] event counts -> [time, batch, 2312] float input."""
    return frames.to(device).float().transpose(0, 1).flatten(2)


# %% [markdown]
# ## 3. A network that runs whole sequences
#
# In snnTorch you usually loop over time and call each neuron once per step. Every call
# launches a few small GPU kernels, and for long sequences that launch overhead
# dominates. snntorch-localzo has two layers that take the whole sequence `[time, batch,
# features]` at once, and run the time loop inside one GPU kernel each way:
#
# * `localzo.LinearLeaky(beta, in_features, out_features)`: a linear layer followed by a
#   Leaky neuron. Its backward uses that LocalZO gradients are zero almost everywhere:
#   the weight gradient is summed over the active entries only.
# * `localzo.Leaky(...).forward_sequence(current)`: the Leaky neuron of Tutorial 1, run on
#   a whole sequence of input currents, here after an ordinary `nn.Linear`.
#
# Both give exactly the spikes and membranes of the step-by-step loop. On a CPU they run
# that loop for you, so this notebook works everywhere.
#
# We read the output layer by its mean membrane potential, as in Tutorial 1. One point
# matters with LocalZO: a neuron only gets a gradient when its membrane passes near the
# threshold, so a hidden layer that never gets close to firing would not learn at all.
# The event frames are sparse, so we scale up the default initial weights of the first
# layer until its neurons fire.

# %%
class EventNet(nn.Module):
    def __init__(self, spike_grad, n_in=int(np.prod(sensor_size)), n_out=10, beta=0.9):
        super().__init__()
        self.lif1 = localzo.LinearLeaky(beta, n_in, hidden, spike_grad=spike_grad)
        self.fc2 = nn.Linear(hidden, n_out)
        self.lif2 = localzo.Leaky(beta=beta, spike_grad=spike_grad)
        with torch.no_grad():
            self.lif1.linear.weight.mul_(4.0)

    def forward(self, x):
        spk1, _ = self.lif1(x)  # x: [time, batch, 2312] -> spikes [time, batch, hidden]
        cur2 = self.fc2(spk1)  # nn.Linear acts on every time step at once
        _, mem2 = self.lif2.forward_sequence(cur2, torch.zeros_like(cur2[0]))  # from rest
        return spk1, mem2


spike_grad = localzo.make("normal", delta=0.05, track=True)
torch.manual_seed(0)
net = EventNet(spike_grad).to(device)
print(net)

with torch.no_grad():
    spk1, _ = net(to_sequence(frames))
print(f"hidden firing rate at initialisation: {spk1.mean().item():.3f} spikes per neuron and step")

# %% [markdown]
# ## 4. Training
#
# A standard loop: cross-entropy on the mean output membrane, Adam. The sparsity meter
# counts the non-zero spike gradients of both layers (they share one `spike_grad`).

# %%
def evaluate(net):
    net.eval()
    correct = total = 0
    with torch.no_grad():
        for frames, targets in test_loader:
            _, mem = net(to_sequence(frames))
            correct += (mem.mean(0).argmax(1).cpu() == targets).sum().item()
            total += len(targets)
    return correct / total


optimizer = torch.optim.Adam(net.parameters(), lr=2e-3)
loss_fn = nn.CrossEntropyLoss()
history = {"loss": [], "test_acc": [], "active": []}
for epoch in range(num_epochs):
    net.train()
    spike_grad.reset_stats()
    total, count = 0.0, 0
    for frames, targets in train_loader:
        _, mem = net(to_sequence(frames))
        loss = loss_fn(mem.mean(0), targets.to(device))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        total += loss.item() * len(targets)
        count += len(targets)
    history["loss"].append(total / count)
    history["test_acc"].append(evaluate(net))
    history["active"].append(spike_grad.active_fraction)
    print(f"epoch {epoch + 1}: loss {history['loss'][-1]:.3f}, "
          f"test accuracy {100 * history['test_acc'][-1]:.2f}%, "
          f"non-zero spike gradients {100 * history['active'][-1]:.2f}%")

# %%
source = "N-MNIST" if USE_REAL else "generated N-MNIST-format events"
fig_train = plots.training_figure({"LinearLeaky + Leaky.forward_sequence": history},
                                  title=f"{source}, {hidden} hidden neurons, T={num_steps}")
plots.save(fig_train, FIGURES / "03_training.png")
fig_train

# %% [markdown]
# ## What to take away
#
# * tonic's datasets and transforms plug in unchanged: events in, frames out.
# * `localzo.LinearLeaky` and `Leaky.forward_sequence` take the whole `[time, batch,
#   features]` tensor, which is what lets the GPU kernels run the time loop in one launch
#   and skip the neurons whose LocalZO gradient is zero.
# * Only a few percent of the neurons receive a gradient in each backward pass, and the
#   network still learns. Tutorial 4 measures what that buys on your GPU.
#
# To train on other tonic datasets, change the dataset and `sensor_size`: for SHD,
# `tonic.datasets.SHD` with `sensor_size = (700, 1, 1)`; for DVS Gesture,
# `tonic.datasets.DVSGesture` with `(128, 128, 2)` and 11 classes (and usually a
# `transforms.Downsample` first).
