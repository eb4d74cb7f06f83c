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
# # Tutorial 2: why LocalZO works, checked numerically
#
# Tutorial 1 used LocalZO as a black box. Here we open it and check, with a few lines of
# code each, the three facts it rests on:
#
# 1. a single LocalZO gradient is **random and almost always exactly zero**,
# 2. its **average is a surrogate gradient**, with a known closed form,
# 3. for snnTorch's ATan, sigmoid and fast sigmoid surrogates there is a LocalZO
#    **twin** whose average is exactly that surrogate,
#
# and we predict **how many neurons are active** in the backward pass from `delta` and
# the number of samples.
#
# The method is from Mukhoty, Bojkovic, de Vazelhes, Zhao, De Masi, Xiong and Gu,
# *Direct Training of SNN using Local Zeroth Order Method*, NeurIPS 2023
# (arXiv:2302.00910). Everything runs on a CPU in a few seconds.

# %%
import math
import os
from pathlib import Path

import torch
from snntorch import surrogate

import snntorch_localzo as localzo
from snntorch_localzo.demo import plots

FAST = os.environ.get("SNNTORCH_LOCALZO_TUTORIAL_FAST") == "1"
FIGURES = Path(os.environ.get("SNNTORCH_LOCALZO_FIGURES", "figures"))
draws = 20_000 if FAST else 200_000  # Monte-Carlo repetitions
torch.manual_seed(0)

# %% [markdown]
# ## 1. The estimate
#
# A spiking neuron fires when its membrane potential crosses the threshold. Write
# $u = U - U_{\rm thr}$ (snnTorch calls it `mem_shift`); the spike is the Heaviside step
# $S = H(u)$, whose derivative is zero everywhere except at $u = 0$.
#
# LocalZO does not differentiate $H$. It *probes* it: draw a random number $z$ from a
# symmetric distribution $\lambda$ with unit variance, look at $H$ a step $\delta z$ to
# each side of $u$, and take the difference quotient along $z$:
#
# $$
# G(u; z) \;=\; \frac{H(u + \delta z) - H(u - \delta z)}{2\delta}\, z
#        \;=\; \frac{|z|}{2\delta}\;\mathbb{1}\big[\,|u| < \delta |z|\,\big].
# $$
#
# Read the right-hand side in words: *if the neuron is within $\delta|z|$ of its
# threshold, its gradient is $|z|/2\delta$; otherwise it is exactly zero.* With $m$
# samples $z_1, \dots, z_m$ the estimate is the mean of the $m$ values.
#
# In snnTorch terms, `localzo.make()` is a `spike_grad`: its forward is the step, its
# backward multiplies the incoming gradient by a fresh $G$ at every call. Let us look at
# one backward pass over a range of membrane potentials:

# %%
est = localzo.make("normal", delta=0.05)
u = torch.linspace(-0.25, 0.25, 501, requires_grad=True)
est(u).sum().backward()
one_draw = u.grad.clone()
print(f"non-zero entries in one backward: {(one_draw != 0).sum().item()} of {len(one_draw)}")

fig = plots.figure(6, 3)
ax = fig.add_subplot()
ax.plot(u.detach(), one_draw, ".", ms=3)
ax.set_xlabel("u = mem - threshold")
ax.set_ylabel("G(u; z), one draw")
ax.set_title("One LocalZO backward: zero unless |u| < delta |z|", fontsize=10)
plots.save(fig, FIGURES / "02_single_draw.png")
fig

# %% [markdown]
# Every point drew its own $z$: near the threshold some points are active, with heights
# $|z|/2\delta$, and far from it none is. That zero is exact, not a small number, which is
# what lets the GPU kernels skip those neurons.
#
# ## 2. The average is a surrogate gradient
#
# Averaging over $z$ (the estimate is symmetric in $z$, so we integrate over $z > 0$ and
# double):
#
# $$
# g(u) \;=\; \mathbb{E}_z\big[G(u; z)\big]
#      \;=\; \frac{1}{\delta}\int_{|u|/\delta}^{\infty} z\,\lambda(z)\,dz .
# $$
#
# This is a smooth bump around the threshold: a surrogate gradient. For the three
# distributions of the paper it has a closed form:
#
# | $z$ | $g(u)$ |
# |---|---|
# | normal $\mathcal N(0,1)$ | $\dfrac{1}{\delta\sqrt{2\pi}}\,e^{-u^2/2\delta^2}$ |
# | uniform on $[-\sqrt3, \sqrt3]$ | $\dfrac{3 - u^2/\delta^2}{4\sqrt3\,\delta}$ for $\lvert u\rvert < \sqrt3\,\delta$, else $0$ |
# | Laplace with scale $1/\sqrt2$ | $\dfrac{1}{2\delta}\Big(\dfrac{\lvert u\rvert}{\delta} + \dfrac{1}{\sqrt2}\Big)e^{-\sqrt2\,\lvert u\rvert/\delta}$ |
#
# `est.expected_grad(u)` returns $g(u)$. Let us estimate the same mean by brute force:
# run the backward many times and average. Each entry of a tensor draws its own $z$, so
# one backward through a tensor holding 1000 copies of `u` already gives 1000
# independent estimates at every point; we repeat that until we have `draws` of them.
# The standard error of the mean tells us how close we should expect to get.

# %%
def monte_carlo(spike_grad, u, draws, copies=1000):
    """Mean and standard error of `draws` independent LocalZO estimates at each u."""
    grads = []
    for _ in range(draws // copies):
        x = u.repeat(copies, 1).requires_grad_(True)  # [copies, len(u)]
        spike_grad(x).sum().backward()
        grads.append(x.grad)
    grads = torch.cat(grads).double()
    return grads.mean(0), grads.std(0) / math.sqrt(len(grads))


def agreement(mean, stderr, expected):
    """Largest gap between `mean` and `expected`, relative to 5 standard errors plus 1%
    of the peak (the 1% covers the far tails, where no draw may be active). Below 1
    means every point agrees; by chance alone a point exceeds 5 standard errors with
    probability below one in a million."""
    tolerance = 5 * stderr + 0.01 * expected.abs().max()
    return ((mean - expected).abs() / tolerance).max().item()


panels, worst_dist = [], {}
for name in ("normal", "uniform", "laplace"):
    est = localzo.make(name, delta=0.05)
    u = torch.linspace(-3 * est.delta, 3 * est.delta, 30)
    mean, stderr = monte_carlo(est, u, draws)
    expected = est.expected_grad(u).double()
    worst_dist[name] = agreement(mean, stderr, expected)
    print(f"{name:<8} largest gap / tolerance: {worst_dist[name]:.2f}")
    panels.append(dict(u=u, expected=expected, estimated=mean, stderr=stderr,
                       title=f"localzo.make({name!r}, delta=0.05), {draws} draws"))

fig_dist = plots.gradient_figure(panels)
plots.save(fig_dist, FIGURES / "02_expected_vs_estimated.png")
fig_dist

# %% [markdown]
# The dots (Monte-Carlo means, with bars of two standard errors) sit on the curves
# (closed forms): on average LocalZO *is* a surrogate gradient. Each distribution gives
# a differently shaped one; `delta` sets the width. The area under every curve is
# $\mathbb{E}[z^2] = 1$, the same as the step's true derivative, the Dirac delta.
#
# ## 3. Twins of snnTorch's surrogates
#
# The argument also runs backwards. Write the estimate a little more generally,
# $G = c\,|z|^p\,\mathbb{1}[|u| < \delta|z|]\,/\,2\delta$ with $p = \pm 1$. For *any*
# surrogate $g$ that is even and decreasing away from zero, choosing
#
# $$
# \lambda(z) \;=\; -\,\frac{\delta^2\, g'(\delta |z|)}{c\,|z|^p}
# $$
#
# makes $\mathbb{E}_z[G] = g$ exactly (differentiate the integral of section 2 to see
# it), and the normalisation of $\lambda$ fixes $c$ or $\delta$. So each of snnTorch's
# surrogates has a LocalZO *twin*: the same training signal on average, but sparse in
# every single backward pass. They take snnTorch's parameter names and defaults:
#
# ```python
# localzo.make("atan", alpha=2.0)          # twin of surrogate.atan(alpha=2.0)
# localzo.make("sigmoid", slope=25)        # twin of surrogate.sigmoid(slope=25)
# localzo.make("fast_sigmoid", slope=25)   # twin of surrogate.fast_sigmoid(slope=25)
# ```
#
# We compare three things: the twin's closed form, its Monte-Carlo mean, and the
# gradient that snnTorch's own surrogate returns in backward.

# %%
def snntorch_backward(spike_grad, u):
    x = u.clone().requires_grad_(True)
    spike_grad(x).sum().backward()
    return x.grad.double()


twins = [
    ("atan", localzo.make("atan", alpha=2.0), surrogate.atan(alpha=2.0), "surrogate.atan(alpha=2.0)"),
    ("sigmoid", localzo.make("sigmoid", slope=25), surrogate.sigmoid(slope=25),
     "surrogate.sigmoid(slope=25)"),
    ("fast_sigmoid", localzo.make("fast_sigmoid", slope=25), surrogate.fast_sigmoid(slope=25),
     "surrogate.fast_sigmoid(slope=25)"),
]
panels, worst_twin, closed_form_gap = [], {}, {}
for name, twin, theirs, label in twins:
    u = torch.linspace(-4 * twin.delta, 4 * twin.delta, 30)
    mean, stderr = monte_carlo(twin, u, draws)
    reference = snntorch_backward(theirs, u)
    expected = twin.expected_grad(u).double()
    worst_twin[name] = agreement(mean, stderr, reference)
    closed_form_gap[name] = ((expected - reference).abs().max() / reference.max()).item()
    print(f"{name:<13} Monte-Carlo vs snnTorch: gap / tolerance {worst_twin[name]:.2f};  "
          f"closed form vs snnTorch: relative gap {closed_form_gap[name]:.1e}")
    panels.append(dict(u=u, expected=expected, estimated=mean, stderr=stderr,
                       surrogate=reference, surrogate_label=label,
                       title=f"{twin.dist.name} twin, {draws} draws"))

fig_twins = plots.gradient_figure(panels)
plots.save(fig_twins, FIGURES / "02_twins.png")
fig_twins

# %% [markdown]
# The dashed line is snnTorch's backward, the solid line the twin's closed form: they
# coincide, and the Monte-Carlo means agree with both. Note the scales: ATan and fast
# sigmoid have heavy $1/u^2$ tails, so their twins must sometimes draw a huge $|z|$, and
# they are far less sparse than a normal $z$ with a small `delta` (section 4 shows how
# to predict this).
#
# ## 4. How many neurons are active?
#
# A neuron at distance $|u|$ from the threshold is active (non-zero gradient) when at
# least one of its $m$ samples has $|z_i| > |u|/\delta$:
#
# $$
# P(G \neq 0 \mid u) \;=\; 1 - F\!\left(\frac{|u|}{\delta}\right)^{m},
# $$
#
# with $F$ the distribution function of $|z|$; that is `est.active_prob(u)`. Over a whole
# layer, whose membrane potentials have density $\rho$ near the threshold, and for small
# $\delta$, the expected fraction is about
#
# $$
# \text{active fraction} \;\approx\; 2\,\delta\,\mathbb{E}\big[\max_i |z_i|\big]\,\rho(0),
# $$
#
# linear in $\delta$ and growing slowly with $m$. Let us check both formulas on a made-up
# layer whose membrane potentials are spread normally around the threshold with
# standard deviation 0.3, by counting the non-zero entries of one backward pass:

# %%
n_neurons = 20_000 if FAST else 200_000
sigma = 0.3
mem_shift = sigma * torch.randn(n_neurons)
rho0 = 1 / (sigma * math.sqrt(2 * math.pi))  # density of mem_shift at 0
deltas = [0.002, 0.005, 0.01, 0.02, 0.05, 0.1]

active = {}  # samples -> list of (delta, measured, predicted, approximation)
for m in (1, 3, 5):
    active[m] = []
    for delta in deltas:
        est = localzo.make("normal", delta=delta, samples=m)
        x = mem_shift.clone().requires_grad_(True)
        est(x).sum().backward()
        measured = (x.grad != 0).float().mean().item()
        predicted = est.active_prob(mem_shift).mean().item()
        e_max = est.sample((100_000, m)).abs().max(1).values.mean().item()
        active[m].append((delta, measured, predicted, 2 * delta * e_max * rho0))
    print(f"samples={m}: " + ", ".join(
        f"delta {d:g}: {100 * a:.2f}% (predicted {100 * p:.2f}%)" for d, a, p, _ in active[m]))

# %%
fig_active = plots.figure(6, 3.8)
ax = fig_active.add_subplot()
for i, (m, rows) in enumerate(active.items()):
    d = [r[0] for r in rows]
    ax.plot(d, [100 * r[1] for r in rows], "o", color=f"C{i}", label=f"measured, samples={m}")
    ax.plot(d, [100 * r[2] for r in rows], "-", color=f"C{i}",
            label="exact: mean of 1 - F(|u|/delta)^m" if i == 0 else None)
    ax.plot(d, [100 * r[3] for r in rows], ":", color=f"C{i}",
            label="approximation: 2 delta E[max|z|] rho(0)" if i == 0 else None)
ax.set_xscale("log")
ax.set_yscale("log")
ax.set_xlabel("delta")
ax.set_ylabel("active neurons in backward %")
ax.set_title(f"Normal z; membranes ~ N(0, {sigma}^2) around the threshold", fontsize=10)
ax.legend(fontsize=7, ncol=1)
plots.save(fig_active, FIGURES / "02_active_fraction.png")
fig_active

# %% [markdown]
# The exact formula (lines) goes through the measurements (dots); the linear
# approximation (dotted) is good while $\delta$ is small against the spread of the
# membranes. In a real network $\rho(0)$ is unknown and changes while it learns, which is
# why `make(track=True)` measures the fraction directly (Tutorial 1).
#
# **Practical rules:** the active fraction grows linearly with `delta`; more samples
# reduce the variance of the estimate but widen the active band (with a normal $z$,
# $\mathbb{E}\max|z_i|$ is 0.80 for one sample and 1.57 for five); and heavy-tailed
# twins (ATan, fast sigmoid) buy snnTorch's exact surrogate at the price of sparsity.
#
# Next: **Tutorial 3** trains on event-camera data with the sequence layers.

# %%
worst_active_error = max(abs(a - p) for rows in active.values() for _, a, p, _ in rows)
print(f"largest |measured - predicted| active fraction: {100 * worst_active_error:.3f} points")
