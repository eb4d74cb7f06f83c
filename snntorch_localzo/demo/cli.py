"""Command line: ``snntorch-localzo`` / ``python -m snntorch_localzo``.

The default run trains the same spiking network on spike-encoded digits
twice, with snnTorch's ATan surrogate and with LocalZO, from the same seed,
and prints a comparison table. Subcommands run the other training methods'
demos: ``snntorch-localzo opzo ...`` and ``snntorch-localzo ftbc ...``
(``--help`` after the subcommand lists their options).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from typing import List, Optional, Sequence

import snntorch as snn
import torch

from ..adaptive import AdaptiveDelta
from ..distributions import ADAPTIVE_LAWS
from ..distributions import DISTRIBUTIONS
from .._progress import progress_counter
from ..estimator import SAMPLINGS, LocalZO, make
from . import args
from .data import spiking_digits
from .train import RunResult, SpikeGradProbe, batches_per_epoch, train_digits

__all__ = ["main", "build_parser"]


#: subcommand -> module of this package with ``main(argv) -> int``
SUBCOMMANDS = {
    "opzo": "snntorch_localzo.demo.opzo",
    "ftbc": "snntorch_localzo.demo.ftbc",
}


def build_parser() -> argparse.ArgumentParser:
    p = args.Parser(
        prog="snntorch-localzo",
        epilog="Other training methods: 'snntorch-localzo opzo --help' (online "
        "pseudo-zeroth-order training), 'snntorch-localzo ftbc --help' (ANN-to-SNN "
        "conversion with forward temporal bias correction).",
        description=(
            "Train a small spiking network on spike-encoded digits with snnTorch's "
            "ATan surrogate and with LocalZO, and compare accuracy, backward "
            "sparsity and time per epoch."
        ),
    )
    p.add_argument("--epochs", type=args.positive_int, default=15, help="training epochs (default 15)")
    p.add_argument("--seed", type=int, default=0, help="first seed (default 0)")
    p.add_argument(
        "--runs", type=args.positive_int, default=1,
        help="number of seeds, seed..seed+runs-1 (default 1)",
    )
    p.add_argument(
        "--device", type=args.device, default="auto",
        help="'auto' (CUDA when present), 'cpu', 'cuda', 'cuda:1', ...",
    )
    p.add_argument(
        "--dist", default=None, choices=sorted(DISTRIBUTIONS),
        help="LocalZO distribution (default: make()'s, uniform with the adaptive step, "
        "normal with a number --delta)"
    )
    p.add_argument(
        "--delta", type=args.step, default=None,
        help=f"LocalZO step for {'/'.join(ADAPTIVE_LAWS)}: 'adaptive' (default: make()'s "
        "adaptive step) or a number > 0 for a fixed step, e.g. 0.008 (see README)",
    )
    p.add_argument(
        "--alpha", type=args.positive_float, default=None,
        help="parameter of the atan twin, as snnTorch's surrogate.atan (default 2.0)",
    )
    p.add_argument(
        "--slope", type=args.positive_float, default=None,
        help="parameter of the sigmoid and fast_sigmoid twins, as snnTorch's (default 25)",
    )
    p.add_argument("--samples", type=args.positive_int, default=1,
                   help="LocalZO directions per neuron (default 1)")
    p.add_argument("--sampling", default="auto", choices=list(SAMPLINGS),
                   help="how the active entries are drawn: 'auto' (default: make()'s, by the incoming "
                   "gradient in the spike function's float32 calls, by the law in the sequence layers), "
                   "'law' or 'gradient' (by the incoming gradient: the same expected gradient and count, "
                   "less variance) everywhere")
    p.add_argument("--hidden", type=args.positive_int, default=128, help="hidden neurons (default 128)")
    p.add_argument("--steps", type=args.positive_int, default=25,
                   help="time steps per sample (default 25)")
    p.add_argument(
        "--linear-leaky", action="store_true",
        help="train the LocalZO network built from localzo.LinearLeaky layers (one fused "
        "sequence layer each: the native CPU path or the GPU kernels) instead of snn.Leaky "
        "with spike_grad=localzo.make()",
    )
    p.add_argument("--json", metavar="PATH", type=args.json_path,
                   help="also write every run's measurements as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--plots",
        metavar="DIR",
        type=args.plot_dir,
        help="also save PNG figures in DIR: accuracy per epoch, active fraction per epoch, "
        "expected against estimated gradient (needs matplotlib)",
    )
    return p


#: the laws with a free ``delta`` (adaptive unless ``--delta`` fixes it)
#: the parameter each twin takes
TWIN_PARAMETER = {"atan": "alpha", "sigmoid": "slope", "fast_sigmoid": "slope"}


def check_dist_options(parser: argparse.ArgumentParser, opts) -> None:
    """Each distribution takes its own parameter: ``--delta`` for the paper's
    laws, ``--alpha`` for the atan twin, ``--slope`` for the sigmoid twins."""
    takes = TWIN_PARAMETER.get(opts.dist, "delta")
    for name in ("delta", "alpha", "slope"):
        if getattr(opts, name) is not None and name != takes:
            parser.error(
                f"argument --{name}: --dist {opts.dist} takes --{takes}"
                + (" (a twin's delta is fixed by its surrogate parameter)" if name == "delta" else "")
            )


def _localzo_from_args(opts) -> LocalZO:
    params = {}
    if opts.dist is None or opts.dist in ADAPTIVE_LAWS:
        params["delta"] = None if opts.delta in (None, "adaptive") else opts.delta
    elif getattr(opts, TWIN_PARAMETER[opts.dist]) is not None:
        name = TWIN_PARAMETER[opts.dist]
        params[name] = getattr(opts, name)
    return make(opts.dist, samples=opts.samples, track=True, sampling=opts.sampling, **params)


def call_string(est) -> str:
    """``localzo.make('normal', delta=0.01)``: how a user would write it;
    ``localzo.make()`` for the default (uniform law, adaptive step)."""
    if est.adaptive:
        params = "" if est.rule == AdaptiveDelta() else f", delta={est.rule!r}"
    else:
        params = "".join(f", {k}={v:g}" for k, v in est.dist.params().items())
    samples = f", samples={est.samples}" if est.samples != 1 else ""
    sampling = f", sampling={est.sampling!r}" if est.sampling != "auto" else ""
    if est == make():
        return "localzo.make()"
    if est == make(sampling=est.sampling):
        return f"localzo.make({sampling[2:]})"
    return f"localzo.make({est.dist.name!r}{params}{samples}{sampling})"


def _mean_std(values: Sequence[float]) -> str:
    vals = [v for v in values if not math.isnan(v)]
    if not vals:
        return "n/a"
    if len(vals) == 1:
        return f"{vals[0]:.2f}"
    return f"{statistics.mean(vals):.2f} ± {statistics.stdev(vals):.2f}"


def format_table(rows: List[List[RunResult]]) -> str:
    """One line per spike gradient: accuracy, active fraction, time per epoch."""
    width = max([38] + [len(runs[0].name) + 2 for runs in rows])  # names stay in their column
    header = (
        f"{'spike_grad':<{width}}{'test acc %':>16}{'active in bwd % (ep 2+)':>25}{'max':>7}"
        f"{'s / epoch':>14}"
    )
    lines = [header, "-" * len(header)]
    for runs in rows:
        acc = [100.0 * r.final_acc for r in runs]
        act = [
            100.0 * statistics.mean(r.active_frac[1:] or r.active_frac) for r in runs
        ]
        peak = max(100.0 * max(r.active_frac[1:] or r.active_frac) for r in runs)
        sec = [statistics.median(r.epoch_s) for r in runs]
        lines.append(
            f"{runs[0].name:<{width}}{_mean_std(acc):>16}{_mean_std(act):>25}{peak:>7.2f}"
            f"{_mean_std(sec):>14}"
        )
    lines.append("")
    for runs in rows:
        per_seed = ", ".join(f"seed {r.seed}: {100 * r.final_acc:.2f}" for r in runs)
        lines.append(f"{runs[0].name}: {per_seed}")
    return "\n".join(lines)


def _as_layer(u: torch.Tensor, draws: int) -> torch.Tensor:
    """The points ``u`` as one call's membranes ``[draws, len(u)]``: each of the
    ``draws`` samples holds all the points (so an adaptive step, chosen per
    sample from its own membrane, is the same for every draw)."""
    return u.float().unsqueeze(0).repeat(draws, 1)


def monte_carlo_grad(spike_grad, u: torch.Tensor, draws: int):
    """Mean and standard error over ``draws`` independent estimates of
    ``spike_grad``'s gradient at each point of ``u`` (one backward call)."""
    x = _as_layer(u, draws).requires_grad_(True)
    spike_grad(x).backward(torch.ones_like(x))
    g = x.grad.double()
    return g.mean(0), g.std(0) / math.sqrt(draws)


def expected_grad(est: LocalZO, u: torch.Tensor, draws: int) -> torch.Tensor:
    """What :func:`monte_carlo_grad` estimates: ``est.expected_grad`` at each
    point of ``u`` (with the adaptive step, given the step of that call)."""
    return est.expected_grad(_as_layer(u, draws))[0].double()


def save_plots(directory, results: List[List[RunResult]], est: LocalZO, draws: int = 4000):
    """Writes ``accuracy_per_epoch.png``, ``active_fraction_per_epoch.png`` and
    ``expected_vs_estimated_gradient.png`` in ``directory``; returns their paths."""
    from pathlib import Path

    import snntorch.surrogate as surrogate

    from . import plots

    directory = Path(directory)
    seeds = len(results[0])
    band = f" (mean ± std of {seeds} seeds)" if seeds > 1 else ""
    acc = {runs[0].name: [r.test_acc for r in runs] for runs in results}
    fig_acc = plots.curves_figure(acc, "test accuracy %", title="Spike-encoded digits" + band,
                                  scale=100.0)
    active = {runs[0].name: [r.active_frac for r in runs] for runs in results}
    fig_act = plots.curves_figure(active, "non-zero spike gradients in backward %", log=True,
                                  title="Active fraction per epoch" + band, scale=100.0)
    title = f"{call_string(est)}, {draws} draws"
    if est.adaptive:
        # the step comes from the sample's membranes: a layer of 256 evenly spread ones,
        # of which the figure shows those within 4 steps of threshold
        u = torch.linspace(-1, 1, 256, dtype=torch.float64)
        # every draw's (the rows are alike); at threshold, where no floor widens it
        step = float(est.step(_as_layer(u, draws))[0].flatten()[u.abs().argmin()])
        shown = u.abs() <= 4 * step
        title = f"{call_string(est)}, step {step:.3g} at threshold, {draws} draws"
    else:
        u = torch.linspace(-4 * est.delta, 4 * est.delta, 32, dtype=torch.float64)
        shown = torch.ones_like(u, dtype=torch.bool)
    twin = make("atan")
    u_atan = torch.linspace(-4 * twin.delta, 4 * twin.delta, 32, dtype=torch.float64)
    with torch.random.fork_rng(devices=[]):  # reproducible draws, caller's generator untouched
        torch.manual_seed(0)
        mean, err = monte_carlo_grad(est, u, draws)
        mean_atan, err_atan = monte_carlo_grad(twin, u_atan, draws)
    x = u_atan.clone().requires_grad_(True)
    surrogate.atan()(x).backward(torch.ones_like(x))
    fig_grad = plots.gradient_figure(
        [
            dict(u=u[shown], expected=expected_grad(est, u, draws)[shown], estimated=mean[shown],
                 stderr=err[shown], title=title),
            dict(u=u_atan, expected=expected_grad(twin, u_atan, draws), estimated=mean_atan,
                 stderr=err_atan, surrogate=x.grad, surrogate_label="snntorch.surrogate.atan()",
                 title=f"localzo.make('atan'), {draws} draws"),
        ],
        ncols=2,
    )
    return [
        plots.save(fig, directory / name)
        for fig, name in [(fig_acc, "accuracy_per_epoch.png"),
                          (fig_act, "active_fraction_per_epoch.png"),
                          (fig_grad, "expected_vs_estimated_gradient.png")]
    ]


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in SUBCOMMANDS:
        import importlib

        return importlib.import_module(SUBCOMMANDS[argv[0]]).main(argv[1:])
    parser = build_parser()
    opts = parser.parse_args(argv)
    check_dist_options(parser, opts)
    device = opts.device
    import snntorch.surrogate as surrogate

    localzo_name = call_string(_localzo_from_args(opts))
    layer = snn_leaky = "snn.Leaky"
    if opts.linear_leaky:
        layer = "linear_leaky"
        localzo_name = "LinearLeaky, " + localzo_name
    specs = [
        ("snntorch.surrogate.atan()", lambda: SpikeGradProbe(surrogate.atan()), snn_leaky),
        (localzo_name, lambda: _localzo_from_args(opts), layer),
    ]
    seeds = list(range(opts.seed, opts.seed + opts.runs))
    print(
        f"Spike-encoded digits (scikit-learn), 64-{opts.hidden}-10 Leaky, T={opts.steps}, "
        f"{args.plural(opts.epochs, 'epoch')}, device {device}, "
        f"seed{'s' if len(seeds) != 1 else ''} {seeds}",
        flush=True,
    )
    results: List[List[RunResult]] = [[] for _ in specs]
    for seed in seeds:
        data = spiking_digits(num_steps=opts.steps, seed=seed, device=device)
        total = opts.epochs * batches_per_epoch(data.x_train.shape[1], 64)
        for i, (name, factory, leaky) in enumerate(specs):
            bar, progress = progress_counter(total, not opts.no_progress, unit="batch")
            if bar is not None:
                bar.set_description(f"seed {seed} {name}")
            results[i].append(
                train_digits(
                    factory(),
                    name=name,
                    seed=seed,
                    epochs=opts.epochs,
                    hidden=opts.hidden,
                    num_steps=opts.steps,
                    device=device,
                    data=data,
                    progress=progress,
                    leaky=snn.Leaky if leaky == snn_leaky else leaky,
                )
            )
            if bar is not None:
                bar.close()
    print(format_table(results), flush=True)
    if opts.json:
        with open(opts.json, "w") as fh:
            json.dump([[r.__dict__ for r in runs] for runs in results], fh, indent=1)
    if opts.plots:
        for path in save_plots(opts.plots, results, _localzo_from_args(opts)):
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
