"""Speed and memory of one training step of a spiking MLP, side by side.

The network is the peers' 3-layer MLP (docs/method.md section 5) (700-hidden-hidden-20 Leaky, beta
0.9, subtractive reset), input spikes with p = 0.05, cross-entropy on output
spike counts, float32 without TF32. For each implementation and each T it
measures, after warm-up, the median over repeats of the forward and the
backward time (CUDA events), the peak memory of forward plus backward above
what was allocated before, and the fraction of non-zero LocalZO estimates in
backward. Everything is measured in one run on one device; with
``--interleave`` the implementations of each (T, hidden) are timed in rounds,
one step of each per round, so that the slow spells of a shared machine fall
on all of them alike (the ratios, not the absolute times, are what it keeps
steady).

    python benchmarks/compare.py                       # GPU, T=100 and 500, hidden 256
    python benchmarks/compare.py --hidden 1024
    python benchmarks/compare.py --device cpu --T 4 --batch 8 --hidden 32 --repeats 2   # smoke

Implementations (``--impls``):
    snntorch_atan        snn.Leaky step loop, snnTorch's ATan surrogate
    snntorch_localzo     snn.Leaky step loop, spike_grad=localzo.make() (the default, adaptive step)
    localzo_step         localzo.Leaky step loop, make() (fused Triton step kernels on CUDA)
    localzo_seq          nn.Linear over all steps + localzo.Leaky.forward_sequence
    localzo_dense        localzo.LinearLeaky stack, dense fused backward (sparse=False)
    localzo_sparse       localzo.LinearLeaky stack, sparse backward (docs/method.md section 4)
    localzo_adaptive     localzo_sparse with make()'s default adaptive step (the sequence rows:
                         delta 0.05)
    ROW+law, ROW+gradient  one of the make() rows (snntorch_localzo, localzo_step,
                         localzo_adaptive) with make(sampling="law") (the law's draw
                         everywhere, make()'s before) or make(sampling="gradient") (by the
                         incoming gradient everywhere, the sequence layers included);
                         make()'s own sampling="auto" draws by the gradient in the spike
                         function's calls, by the law in the sequence layers and the fused
                         Triton step (docs/method.md section 8)
    step_floor           the step loop of the snnTorch rows with a neuron that does no work
                         (spikes where the input current exceeds 1, no membrane, the incoming
                         gradient passed on unchanged): the nn.Linear layers and the loss
                         that any neuron's step loop pays at least, so ATan's step over this
                         row bounds what any spike gradient can gain in a step loop
    spikingjelly         SpikingJelly's multi-step LIF (soft reset, ATan), if installed: 2.0
                         picks its implementation by device (its CPU operators, its CUDA
                         selection); before 2.0 its fastest backend on CUDA (Triton, else CuPy,
                         else its PyTorch loop), its PyTorch loop on the CPU; a benchmark-only
                         dependency, never one of this package

Results print as a table and go to ``benchmarks/results/<device>.json`` as a
list of rows with keys impl, backend (what ran: ``pytorch`` for snnTorch's
loop, the LocalZO path ``triton``/``native``/``reference``, SpikingJelly's
backend), T, B, hidden, fwd_ms, bwd_ms, peak_mib, active_frac, device,
torch, triton, saved_mib (what autograd keeps between the passes, on every
device), energy_j (joules per training step from the GPU's total-energy
counter, with ``--energy`` on a GPU that reports it; else None) and error
(None, or why the row has no numbers: an exception, not installed, past
``--deadline``). The JSON is written again after every row, so an
interrupted run keeps the rows it measured; a failing row does not stop
the others. A bar plot goes to ``docs/img/compare_<device>.png`` (``--plot``).
``--quick`` measures 3 repeats after 1 warm-up with a 0.5 s energy window.
``--replot --out FILE`` prints the table and draws the plot again from a JSON
file. On the CPU, ``--threads`` fixes torch's thread count.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch
import torch.nn as nn
import snntorch as snn
from snntorch import surrogate

import snntorch_localzo as localzo
from snntorch_localzo.demo.models import LinearThenSequence, SequenceMLP, SpikesOf, StepMLP
from snntorch_localzo.demo.timing import time_training_steps
from snntorch_localzo.demo.train import SpikeGradProbe

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT / "benchmarks") not in sys.path:
    sys.path.insert(0, str(ROOT / "benchmarks"))
import _malloc  # noqa: E402
import _nvml  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
IN_FEATURES, OUT_FEATURES = 700, 20


def sizes(hidden: int) -> List[int]:
    return [IN_FEATURES, hidden, hidden, OUT_FEATURES]


# --------------------------------------------------------------------------- models
def _sj_takes_backend() -> bool:
    """Whether SpikingJelly's LIFNode takes a ``backend`` (up to 0.0.0.0.14;
    2.0 picks its implementation from the tensors' device itself)."""
    import inspect

    from spikingjelly.activation_based import neuron

    try:
        params = inspect.signature(neuron.LIFNode.__init__).parameters
    except (TypeError, ValueError):
        return True
    return "backend" in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def _sj_lif(backend: str = "torch"):
    from spikingjelly.activation_based import neuron
    from spikingjelly.activation_based import surrogate as sj_surrogate

    extra = {"backend": backend} if _sj_takes_backend() else {}
    return neuron.LIFNode(
        tau=10.0, decay_input=False, v_threshold=1.0, v_reset=None,
        surrogate_function=sj_surrogate.ATan(), detach_reset=True, step_mode="m", **extra,
    )


#: SpikingJelly's multi-step backends, fastest first.
SJ_BACKENDS = ("triton", "cupy", "torch")
#: The backend name of SpikingJelly 2.0, which dispatches by device itself
#: (its CPU operators on the CPU, its CUDA selection on a GPU).
SJ_AUTO = "auto"


def spikingjelly_backend(device: torch.device) -> str:
    """SpikingJelly's backend for ``device``: with 2.0, ``auto`` (it picks);
    before, its PyTorch loop on the CPU (the others need CUDA), on CUDA the
    first of Triton and CuPy it supports and can import, else its PyTorch
    loop."""
    if not _sj_takes_backend():
        return SJ_AUTO
    if device.type != "cuda":
        return "torch"
    supported = tuple(getattr(_sj_lif(), "supported_backends", ("torch",)))
    for name in SJ_BACKENDS:
        if name not in supported:
            continue
        try:
            if name != "torch":
                __import__(name)
        except Exception:
            continue
        return name
    return "torch"


class SpikingJellyMLP(nn.Module):
    """SpikingJelly 2.0's multi-step LIF with the same dynamics up to when the
    reset applies: tau = 10 without input decay (beta = 0.9), soft reset;
    ``backend`` is SpikingJelly's (``torch``, ``cupy``, ``triton``)."""

    def __init__(self, hidden: int, backend: str = "torch"):
        super().__init__()
        from spikingjelly.activation_based import functional

        self.functional = functional
        mods = []
        widths = sizes(hidden)
        for a, b in zip(widths, widths[1:]):
            mods += [nn.Linear(a, b), _sj_lif(backend)]
        self.net = nn.Sequential(*mods)

    def forward(self, x):
        self.functional.reset_net(self.net)
        return self.net(x).sum(0)


class _PassOn(torch.autograd.Function):
    """Spikes where ``x > 1``; backward passes the incoming gradient on as it is."""

    @staticmethod
    def forward(ctx, x):
        return (x > 1).to(x.dtype)

    @staticmethod
    def backward(ctx, grad):
        return grad


class FreeNeuron(nn.Module):
    """The ``step_floor`` row's neuron: the least a neuron can do in
    :class:`StepMLP` (a threshold, no state, the gradient passed on)."""

    def init_leaky(self):
        return None

    def forward(self, cur, mem):
        return _PassOn.apply(cur), mem


def _localzo_sg(track: bool, adaptive: bool = False, sampling: str = "auto"):
    if adaptive:
        return localzo.make(track=track, sampling=sampling)
    return localzo.make("normal", delta=0.05, track=track)


#: The rows of make() itself, which ``ROW+law`` and ``ROW+gradient`` run with that ``sampling``.
SAMPLING_ROWS = ("snntorch_localzo", "localzo_step", "localzo_adaptive")
SAMPLINGS = ("law", "gradient")


def build(impl: str, hidden: int, track: bool, device: Optional[torch.device] = None,
          gain: float = 1.0) -> nn.Module:
    """The network of one implementation (``track``: count non-zero spike
    gradients) for ``device`` (default the CPU; SpikingJelly's backend depends
    on it), its hidden layers' weights times ``gain`` (:func:`scale_hidden`)."""
    return scale_hidden(_build(impl, hidden, track, device), gain)


def scale_hidden(model: nn.Module, gain: float) -> nn.Module:
    """``model`` with the weights of every linear map but the last (the
    hidden layers') multiplied by ``gain``: at 1 the untrained net's hidden
    layers hardly fire (the spikes of the second are all but none, and a
    fixed step leaves the upper layers without an active entry); at 4, as
    ``train_active.py`` starts its training, they fire and every layer's
    backward has work."""
    if gain != 1.0:
        linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
        with torch.no_grad():
            for m in linears[:-1]:
                m.weight.mul_(gain)
    return model


def _build(impl: str, hidden: int, track: bool, device: Optional[torch.device]) -> nn.Module:
    impl, _, variant = impl.partition("+")
    if variant and (variant not in SAMPLINGS or impl not in SAMPLING_ROWS):
        raise ValueError(f"unknown impl {impl}+{variant}: '+law' or '+gradient' follows one of {SAMPLING_ROWS}")
    sampling = variant or "auto"
    if impl == "snntorch_atan":
        sg = SpikeGradProbe(surrogate.atan()) if track else surrogate.atan()
        return StepMLP(sizes(hidden), lambda: snn.Leaky(beta=0.9, spike_grad=sg))
    if impl == "snntorch_localzo":
        sg = _localzo_sg(track, adaptive=True, sampling=sampling)
        return StepMLP(sizes(hidden), lambda: snn.Leaky(beta=0.9, spike_grad=sg))
    if impl == "localzo_step":
        sg = _localzo_sg(track, adaptive=True, sampling=sampling)
        return StepMLP(sizes(hidden), lambda: localzo.Leaky(beta=0.9, spike_grad=sg))
    if impl == "localzo_seq":
        sg = _localzo_sg(track)
        return SequenceMLP(sizes(hidden), lambda a, b: LinearThenSequence(a, b, sg))
    if impl in ("localzo_dense", "localzo_sparse", "localzo_adaptive"):
        sg = _localzo_sg(track, adaptive=impl == "localzo_adaptive", sampling=sampling)
        sparse = impl != "localzo_dense"
        return SequenceMLP(
            sizes(hidden), lambda a, b: SpikesOf(localzo.LinearLeaky(0.9, a, b, spike_grad=sg, sparse=sparse))
        )
    if impl == "step_floor":
        return StepMLP(sizes(hidden), FreeNeuron)
    if impl == "spikingjelly":
        return SpikingJellyMLP(hidden, spikingjelly_backend(torch.device(device or "cpu")))
    raise ValueError(f"unknown impl {impl!r}")


IMPLS = [
    "snntorch_atan", "snntorch_localzo", "localzo_step", "localzo_seq", "localzo_dense",
    "localzo_sparse", "localzo_adaptive", "step_floor", "spikingjelly",
]


def backend_of(impl: str, device: torch.device) -> str:
    """What runs an implementation's neurons on ``device``: snnTorch's PyTorch
    loop (ATan), SpikingJelly's backend, or the LocalZO path the current
    ``use_backend`` mode gives (the spike function of ``snntorch_localzo``
    included; its reference below the native path's minimum size on the CPU)."""
    if impl in ("snntorch_atan", "step_floor"):
        return "pytorch"
    if impl == "spikingjelly":
        return spikingjelly_backend(device)
    from snntorch_localzo import _backend

    return _backend.device_path(torch.empty(0, device=device)).value


def available(impl: str) -> bool:
    if impl != "spikingjelly":
        return True
    try:
        import spikingjelly.activation_based.neuron  # noqa: F401
    except Exception:
        return False
    return True


def meters(model: nn.Module) -> List[localzo.ActivityMeter]:
    found = {}
    for m in model.modules():
        sg = getattr(m, "spike_grad", None)
        if isinstance(sg, (localzo.LocalZO, SpikeGradProbe)) and sg.meter is not None:
            found[id(sg.meter)] = sg.meter
    return list(found.values())


# --------------------------------------------------------------------------- timing
class SavedBytes:
    """Counts the bytes autograd saves for backward (distinct storages)."""

    def __init__(self):
        self.storages = {}

    def pack(self, t):
        if isinstance(t, torch.Tensor) and t.device.type != "meta":
            st = t.untyped_storage()
            self.storages[st.data_ptr()] = st.nbytes()
        return t

    @property
    def mib(self) -> float:
        return sum(self.storages.values()) / 2**20


def energy_per_step(step: Callable[[], None], device: torch.device, seconds: float = 0.5) -> Optional[float]:
    """Joules per call of ``step`` from NVML's total-energy counter (mJ since the
    driver loaded), over at least ``seconds``; None where it is not reported."""
    reader = _nvml.energy_reader(device)
    if reader is None:
        return None
    torch.cuda.synchronize(device)
    start_mj, start = reader(), time.perf_counter()
    calls = 0
    while time.perf_counter() - start < seconds or calls < 3:
        step()
        calls += 1
        if calls % 8 == 0:
            torch.cuda.synchronize(device)
    torch.cuda.synchronize(device)
    return (reader() - start_mj) / 1e3 / calls


def batch(T: int, B: int, device: torch.device):
    """The benchmark's input spikes ``[T, B, 700]`` (p = 0.05) and labels, fixed."""
    gen = torch.Generator(device="cpu").manual_seed(0)
    x = (torch.rand(T, B, IN_FEATURES, generator=gen) < 0.05).float().to(device)
    y = torch.randint(0, OUT_FEATURES, (B,), generator=gen).to(device)
    return x, y


def model_of(impl: str, hidden: int, device: torch.device, gain: float = 1.0) -> nn.Module:
    """The timed network of ``impl`` (meters off), from seed 0's weights."""
    torch.manual_seed(0)
    return build(impl, hidden, track=False, device=device, gain=gain).to(device)


def measure(
    impl: str, *, T: int, B: int, hidden: int, device: torch.device, repeats: int, warmup: int,
    energy: bool = False, energy_seconds: float = 0.5, times=None, gain: float = 1.0,
) -> Dict:
    """One row. ``times``: ``(fwd, bwd, peak)`` lists measured already (the
    interleaved rounds of :func:`interleaved_times`); else the steps are timed
    here, one after the other."""
    x, y = batch(T, B, device)
    loss_fn = nn.CrossEntropyLoss()
    if times is None:
        model = model_of(impl, hidden, device, gain)
        times = time_training_steps(model, loss_fn, x, y, device=device, warmup=warmup, repeats=repeats)
    fwd, bwd, peak = times
    joules = None
    if energy and device.type == "cuda":
        model = model_of(impl, hidden, device, gain)

        def step():
            model.zero_grad(set_to_none=True)
            loss_fn(model(x), y).backward()

        joules = energy_per_step(step, device, energy_seconds)
    # one more pass with the sparsity meters on (not timed), same initial weights
    torch.manual_seed(0)
    tracked = build(impl, hidden, track=True, device=device, gain=gain).to(device)
    saved = SavedBytes()
    with torch.autograd.graph.saved_tensors_hooks(saved.pack, lambda t: t):
        loss = loss_fn(tracked(x), y)
    loss.backward()
    ms = meters(tracked)
    # SpikingJelly's surrogate is dense: every entry has a gradient
    active = sum(m.active for m in ms) / sum(m.total for m in ms) if ms else 1.0
    return {
        "impl": impl,
        "backend": backend_of(impl, device),
        "T": T,
        "B": B,
        "hidden": hidden,
        "fwd_ms": statistics.median(fwd),
        "bwd_ms": statistics.median(bwd),
        "peak_mib": statistics.median(peak) if peak else None,
        "active_frac": active,
        "saved_mib": saved.mib,
        "energy_j": joules,
    }


def interleaved_times(impls: List[str], *, T: int, B: int, hidden: int, device: torch.device,
                      repeats: int, warmup: int, gain: float = 1.0) -> Dict[str, object]:
    """The training steps of several implementations timed in rounds: every
    round one step of each (their order rotated from round to round), so
    that a slow spell of a shared machine falls on all of them alike. Returns
    ``{impl: (fwd, bwd, peak)}`` of the last ``repeats`` rounds, or ``{impl:
    exception}`` for one whose network could not be built or stepped."""
    x, y = batch(T, B, device)
    loss_fn = nn.CrossEntropyLoss()
    models, out = {}, {}
    for impl in impls:
        try:
            models[impl] = model_of(impl, hidden, device, gain)
        except Exception as exc:
            out[impl] = exc
    times = {impl: ([], [], []) for impl in models}
    for r in range(warmup + repeats):
        order = list(models)
        order = order[r % len(order):] + order[:r % len(order)] if order else order
        for impl in order:
            if impl in out:
                continue
            try:
                f, b, p = time_training_steps(models[impl], loss_fn, x, y, device=device, warmup=0, repeats=1)
            except Exception as exc:
                out[impl] = exc
                continue
            if r >= warmup:
                for acc, new in zip(times[impl], (f, b, p)):
                    acc.extend(new)
    for impl in models:
        out.setdefault(impl, times[impl])
    return out


# --------------------------------------------------------------------------- report
def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform

    return f"cpu ({platform.processor() or platform.machine()})"


def environment(device: torch.device) -> Dict[str, str]:
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:  # pragma: no cover
        triton_version = "n/a"
    return {"device": device_name(device), "torch": torch.__version__, "triton": triton_version}


def _num(v) -> str:
    return "n/a" if v is None else f"{v:.1f}"


def _num3(v) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def measured(rows: List[Dict]) -> List[Dict]:
    """The rows with numbers (not failed, skipped or not installed)."""
    return [r for r in rows if not r.get("error")]


def format_table(rows: List[Dict], baseline: str = "snntorch_atan") -> str:
    failed = [r for r in rows if r.get("error")]
    rows = measured(rows)
    head = (
        f"{'impl':<22}{'T':>5}{'hidden':>8}{'fwd ms':>10}{'bwd ms':>10}{'peak MiB':>10}"
        f"{'saved MiB':>10}{'J/step':>8}{'active %':>10}{'fwd x':>8}{'bwd x':>8}{'total x':>9}"
    )
    lines = [head, "-" * len(head)]
    base = {(r["T"], r["hidden"]): r for r in rows if r["impl"] == baseline}
    for r in rows:
        ref = base.get((r["T"], r["hidden"]))

        def ratio(key_f, key_b=None):
            if ref is None:
                return float("nan")
            num = ref[key_f] + (ref[key_b] if key_b else 0)
            den = r[key_f] + (r[key_b] if key_b else 0)
            return num / den

        lines.append(
            f"{r['impl']:<22}{r['T']:>5}{r['hidden']:>8}{r['fwd_ms']:>10.2f}{r['bwd_ms']:>10.2f}"
            f"{_num(r['peak_mib']):>10}{_num(r.get('saved_mib')):>10}"
            f"{_num3(r.get('energy_j')):>8}{100 * r['active_frac']:>10.3f}{ratio('fwd_ms'):>8.1f}"
            f"{ratio('bwd_ms'):>8.1f}{ratio('fwd_ms', 'bwd_ms'):>9.1f}"
        )
    lines += [f"{r['impl']:<22}{r['T']:>5}{r['hidden']:>8}  no numbers: {r['error']}" for r in failed]
    return "\n".join(lines) + f"\n(x: speed-up over {baseline} at the same T and hidden)"


def ns_per_neuron_step(row: Dict) -> float:
    """A training step's time (forward + backward) per neuron and time step:
    nanoseconds over ``T * B * (spiking neurons of the net)``."""
    neurons = sum(sizes(row["hidden"])[1:])
    return (row["fwd_ms"] + row["bwd_ms"]) * 1e6 / (row["T"] * row["B"] * neurons)


def scaling_table(rows: List[Dict]) -> str:
    """Nanoseconds per neuron-step of each implementation (rows) at each
    ``(T, hidden)`` (columns): how the cost grows with the work."""
    rows = measured(rows)
    keys = sorted(dict.fromkeys((r["hidden"], r["T"]) for r in rows))
    cell = {(r["impl"], r["hidden"], r["T"]): ns_per_neuron_step(r) for r in rows}
    head = f"{'ns per neuron-step':<22}" + "".join(f"{f'T={T} h={h}':>14}" for h, T in keys)
    lines = [head, "-" * len(head)]
    for impl in dict.fromkeys(r["impl"] for r in rows):
        vals = [cell.get((impl, h, T)) for h, T in keys]
        lines.append(f"{impl:<22}" + "".join(f"{v:>14.2f}" if v is not None else f"{'-':>14}" for v in vals))
    return "\n".join(lines)


def plot(rows: List[Dict], path: Path, baseline: str = "snntorch_atan") -> Path:
    """Bars grouped by T (and hidden), one colour per implementation: the
    speed-up over ``baseline`` of a training step and of its backward, and the
    step's milliseconds (log axis); peak MiB when measured (CUDA). Needs
    matplotlib."""
    from snntorch_localzo.demo import plots

    rows = measured(rows)
    keys = list(dict.fromkeys((r["T"], r["hidden"]) for r in rows))
    several = len({h for _, h in keys}) > 1
    groups = [f"T={T}" + (f", hidden {h}" if several else "") for T, h in keys]
    base = {(r["T"], r["hidden"]): r for r in rows if r["impl"] == baseline}
    nan = float("nan")

    def per_impl(value):
        out = {}
        for r in rows:
            group = keys.index((r["T"], r["hidden"]))
            out.setdefault(r["impl"], [nan] * len(keys))[group] = value(r)
        return out

    def speedup(*fields):
        def value(r):
            ref = base.get((r["T"], r["hidden"]))
            return nan if ref is None else sum(ref[f] for f in fields) / sum(r[f] for f in fields)
        return per_impl(value)

    panels = [
        dict(values=speedup("fwd_ms", "bwd_ms"), ylabel=f"step speed-up\n(x over {baseline})",
             ref=1.0, fmt="{:.1f}x"),
        dict(values=speedup("bwd_ms"), ylabel="backward speed-up\n(x)", ref=1.0, fmt="{:.1f}x"),
        dict(values=per_impl(lambda r: r["fwd_ms"] + r["bwd_ms"]),
             ylabel="ms per step\n(fwd + bwd)", log=True, fmt="{:.0f}"),
    ]
    if any(r["peak_mib"] is not None for r in rows):  # measured on CUDA only
        peak = per_impl(lambda r: nan if r["peak_mib"] is None else r["peak_mib"])
        panels.append(dict(values=peak, ylabel="peak MiB", fmt="{:.0f}"))
    fig = plots.grouped_bars_figure(
        groups,
        panels,
        title=f"One training step, B={rows[0]['B']}, {rows[0]['device']}, "
        f"torch {rows[0]['torch']}, triton {rows[0]['triton']}",
    )
    return plots.save(fig, path)


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--T", type=int, nargs="+", default=[100, 500])
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--hidden", type=int, nargs="+", default=[256])
    p.add_argument("--impls", default=",".join(IMPLS), help="comma-separated, see above")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--out", help="JSON path (default benchmarks/results/<device>.json)")
    p.add_argument("--plot", help="PNG path of the bar plot (default docs/img/compare_<device>.png; "
                   "'none': no plot; needs matplotlib)")
    p.add_argument("--replot", action="store_true",
                   help="measure nothing: table and plot again from the JSON given by --out")
    p.add_argument("--energy", action="store_true",
                   help="also joules per training step from the GPU's energy counter (NVML)")
    p.add_argument("--energy-seconds", type=float, default=0.5,
                   help="length of the energy window per row (default 0.5 s)")
    p.add_argument("--quick", action="store_true",
                   help="3 repeats after 1 warm-up, a 0.25 s energy window")
    p.add_argument("--deadline", type=float,
                   help="seconds after which rows not yet started are recorded as skipped")
    p.add_argument("--threads", type=int, help="torch's CPU threads (default: torch's choice)")
    p.add_argument("--interleave", action="store_true",
                   help="time the implementations of each (T, hidden) in rounds, one step of each "
                   "per round, instead of one after the other (a shared machine's slow spells "
                   "then fall on all of them alike); not with --energy")
    p.add_argument("--init-gain", type=float, default=1.0,
                   help="multiply the hidden layers' initial weights by this (default 1: the "
                   "untrained net, whose upper layers hardly fire; 4: a firing net, as "
                   "train_active.py starts); recorded in every row")
    p.add_argument("--malloc", choices=("default", "retain"), default="default",
                   help="'retain': glibc keeps freed memory for reuse instead of faulting large "
                   "tensors in again at every step (benchmarks/_malloc.py; Linux)")
    args = p.parse_args(argv)
    if args.quick:
        args.repeats, args.warmup, args.energy_seconds = 3, 1, 0.25
    if args.interleave and args.energy:
        p.error("argument --interleave: not with --energy (its window times one implementation alone)")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.malloc == "retain":
        if not _malloc.retain():
            p.error("argument --malloc: glibc's mallopt is not available here")
    if args.replot:
        if not args.out:
            p.error("--replot needs --out (the JSON to read)")
        rows = json.loads(Path(args.out).read_text())
        print(format_table(rows))
        if len({(r["T"], r["hidden"]) for r in measured(rows)}) > 1:
            print(scaling_table(rows))
        _write_plot(rows, args.plot)
        return 0
    device = torch.device(args.device)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    env = environment(device)
    env["threads"] = torch.get_num_threads()
    env["malloc"] = args.malloc
    env["init_gain"] = args.init_gain
    print(f"device: {env['device']}, torch {env['torch']}, triton {env['triton']}, "
          f"{env['threads']} threads, malloc {env['malloc']}", flush=True)
    out = Path(args.out) if args.out else RESULTS / (_slug(env["device"]) + ".json")
    out.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    rows = []
    env["interleaved"] = bool(args.interleave)
    impls = args.impls.split(",")
    for hidden in args.hidden:
        for T in args.T:
            late = args.deadline is not None and time.perf_counter() - start > args.deadline
            timed = {}
            if args.interleave and not late:
                timed = interleaved_times([i for i in impls if available(i)], T=T, B=args.batch,
                                          hidden=hidden, device=device, repeats=args.repeats,
                                          warmup=args.warmup, gain=args.init_gain)
            for impl in impls:
                late = late or (args.deadline is not None and time.perf_counter() - start > args.deadline)
                row = run_row(impl, T, hidden, device, args, skip="past --deadline" if late else None,
                              times=timed.get(impl))
                row.update(env)
                rows.append(row)
                write_json(out, rows)  # after every row: an interrupted run keeps what it measured
    print(format_table(rows))
    if len({(r["T"], r["hidden"]) for r in measured(rows)}) > 1:
        print(scaling_table(rows))
    print(f"wrote {out}")
    _write_plot(rows, args.plot)
    return 0


def run_row(impl: str, T: int, hidden: int, device: torch.device, args, skip: Optional[str] = None,
            times=None) -> Dict:
    """One row: measured, or with ``error`` set (and no numbers) when it is
    skipped, not installed, or raises (the next rows still run). ``times``:
    its interleaved timings (or the exception they raised), if taken."""
    row = {"impl": impl, "backend": None, "T": T, "B": args.batch, "hidden": hidden, "fwd_ms": None,
           "bwd_ms": None, "peak_mib": None, "active_frac": None, "saved_mib": None, "energy_j": None}
    if skip is None and not available(impl):
        skip = "not installed"
    if skip is not None:
        print(f"  {impl} T={T} hidden={hidden}: skipped ({skip})", flush=True)
        return dict(row, error=skip)
    try:
        if isinstance(times, Exception):
            raise times
        row = dict(measure(impl, T=T, B=args.batch, hidden=hidden, device=device,
                           repeats=args.repeats, warmup=args.warmup, energy=args.energy,
                           energy_seconds=args.energy_seconds, times=times, gain=args.init_gain),
                   error=None)
    except Exception as exc:  # recorded, and the next row runs
        message = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]
        print(f"  {impl} T={T} hidden={hidden}: FAILED {message}", flush=True)
        if device.type == "cuda":
            torch.cuda.empty_cache()
        return dict(row, error=message)
    print(f"  {impl} ({row['backend']}) T={T} hidden={hidden}: fwd {row['fwd_ms']:.2f} ms, "
          f"bwd {row['bwd_ms']:.2f} ms", flush=True)
    return row


def write_json(path: Path, rows: List[Dict]) -> None:
    """Writes ``rows`` to ``path`` whole or not at all (a temporary file renamed)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(rows, indent=1))
    tmp.replace(path)


def _write_plot(rows: List[Dict], path: Optional[str]) -> None:
    if path == "none" or not measured(rows):
        return
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print("no plot: matplotlib is not installed")
        return
    default = ROOT / "docs" / "img" / ("compare_" + _slug(rows[0]["device"]) + ".png")
    print(f"wrote {plot(rows, Path(path) if path else default)}")


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


if __name__ == "__main__":
    sys.exit(main())
