"""Pictures of LocalZO training, drawn with matplotlib.

matplotlib is imported only when a function here is called (``pip install
'snntorch-localzo[plots]'``). Figures are built with
:class:`matplotlib.figure.Figure`, not ``pyplot``: nothing changes the
global backend, files are rendered by the Agg renderer, and in a notebook a
figure shows (as PNG) when it is the last expression of a cell.

Example::

    from snntorch_localzo.demo import plots

    fig = plots.curves_figure({"ATan": [0.90, 0.94], "LocalZO": [0.89, 0.93]},
                              ylabel="test accuracy")
    plots.save(fig, "figures/accuracy.png")
"""

from __future__ import annotations

import functools
import io
import math
from pathlib import Path
from typing import Dict, Mapping, Optional, Sequence, Union

__all__ = [
    "figure",
    "save",
    "plot_gradient",
    "gradient_figure",
    "curves_figure",
    "training_figure",
    "bars_figure",
    "grouped_bars_figure",
]

Series = Union[Sequence[float], Sequence[Sequence[float]]]


@functools.lru_cache(maxsize=None)
def _figure_class():
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ImportError(
            "plots need matplotlib: pip install 'snntorch-localzo[plots]'"
        ) from exc

    class NotebookFigure(Figure):
        """A matplotlib Figure that Jupyter shows as PNG (IPython calls
        ``_repr_png_``) without pyplot or a global backend."""

        def _repr_png_(self):
            buffer = io.BytesIO()
            self.savefig(buffer, format="png", dpi=100)
            return buffer.getvalue()

    return NotebookFigure


def figure(width: float = 6.0, height: float = 3.5):
    """A new matplotlib ``Figure`` (constrained layout), without pyplot."""
    return _figure_class()(figsize=(width, height), layout="constrained")


def save(fig, path, dpi: int = 110) -> Path:
    """Writes ``fig`` as PNG to ``path`` (parent folders are created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    return path


def _plain_labels(axis) -> None:
    """Plain numbers (0.5, 1, 2, 10) instead of powers of ten on a log ``axis``;
    minor ticks labelled at 2 and 5 times a power of ten only."""
    from matplotlib.ticker import FuncFormatter

    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if f"{v:.0e}"[0] in "25" else ""))


def _titled(fig, title: str):
    """``fig`` with ``title`` above its panels (none when empty)."""
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def _values(x):
    """A tensor, array or list as a plain list of floats."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().double().numpy()
    return [float(v) for v in x]


def plot_gradient(
    ax,
    u,
    expected,
    *,
    estimated=None,
    stderr=None,
    surrogate=None,
    title: str = "",
    surrogate_label: str = "snnTorch surrogate",
):
    """One panel: the expected gradient (line), the Monte-Carlo mean of the
    LocalZO estimates (dots, with bars of two standard errors) and, optionally,
    an snnTorch surrogate's backward (dashed) against ``u = mem - threshold``."""
    u = _values(u)
    ax.plot(u, _values(expected), color="C0", lw=2, label="expected (closed form)")
    if surrogate is not None:
        ax.plot(u, _values(surrogate), color="C3", ls="--", lw=1.5, label=surrogate_label)
    if estimated is not None:
        est = _values(estimated)
        err = [2 * e for e in _values(stderr)] if stderr is not None else None
        ax.errorbar(u, est, yerr=err, fmt="o", ms=3, color="C1", elinewidth=1,
                    label="Monte-Carlo mean")
    ax.set_xlabel("u = mem - threshold")
    ax.set_ylabel("dS/du")
    if title:
        ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7)
    return ax


def gradient_figure(panels: Sequence[Mapping], ncols: int = 3, height: float = 3.0):
    """Several :func:`plot_gradient` panels side by side; each entry of
    ``panels`` holds that function's keyword arguments."""
    ncols = min(ncols, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig = figure(3.6 * ncols, height * nrows)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, kwargs in zip(axes, panels):
        plot_gradient(ax, **kwargs)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    return fig


def _mean_std(runs: Sequence[Sequence[float]]):
    """Element-wise mean and standard deviation over runs of equal length."""
    n = len(runs)
    mean = [sum(col) / n for col in zip(*runs)]
    if n < 2:
        return mean, None
    std = [math.sqrt(sum((v - m) ** 2 for v in col) / (n - 1)) for col, m in zip(zip(*runs), mean)]
    return mean, std


def curves_figure(
    series: Mapping[str, Series],
    ylabel: str,
    *,
    xlabel: str = "epoch",
    title: str = "",
    x: Optional[Sequence[float]] = None,
    log: bool = False,
    scale: float = 1.0,
):
    """One curve per name. A value of ``series`` is either one run (a list of
    numbers) or several runs (a list of lists): then the mean is drawn with a
    band of one standard deviation. ``scale`` multiplies every value (100 for
    percent); ``x`` defaults to 1, 2, ...; ``log`` uses a log y axis."""
    fig = figure()
    ax = fig.add_subplot()
    for i, (name, runs) in enumerate(series.items()):
        runs = [runs] if runs and not isinstance(runs[0], (list, tuple)) else runs
        runs = [[scale * v for v in _values(r)] for r in runs]
        mean, std = _mean_std(runs)
        xs = list(x) if x is not None else list(range(1, len(mean) + 1))
        ax.plot(xs, mean, marker="o", ms=3, color=f"C{i}", label=name)
        if std is not None:
            ax.fill_between(xs, [m - s for m, s in zip(mean, std)],
                            [m + s for m, s in zip(mean, std)], color=f"C{i}", alpha=0.2)
    from matplotlib.ticker import MaxNLocator

    if log:
        ax.set_yscale("log")
        _plain_labels(ax.yaxis)
    if x is None:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def training_figure(histories: Mapping[str, Mapping[str, Sequence[float]]], title: str = ""):
    """Two panels per epoch for one or more training runs: test accuracy and the
    fraction of non-zero spike gradients in backward (log scale). Each history
    holds ``test_acc`` and, when measured, ``active`` (fractions in [0, 1])."""
    from matplotlib.ticker import MaxNLocator

    fig = figure(10, 3.6)
    ax_acc, ax_act = fig.subplots(1, 2)
    for i, (name, h) in enumerate(histories.items()):
        epochs = list(range(1, len(h["test_acc"]) + 1))
        # a style of its own per run: runs that coincide stay visible
        style = dict(color=f"C{i}", label=name, ms=4 - i % 2, marker="os^v"[i % 4],
                     linestyle=("-", "--", "-.", ":")[i % 4], fillstyle=("full", "none")[i % 2])
        ax_acc.plot(epochs, [100 * a for a in h["test_acc"]], **style)
        if h.get("active"):
            ax_act.plot(epochs, [100 * a for a in h["active"]], **style)
    ax_acc.set_ylabel("test accuracy %")
    ax_act.set_ylabel("non-zero spike gradients in backward %")
    ax_act.set_yscale("log")
    _plain_labels(ax_act.yaxis)
    for ax in (ax_acc, ax_act):
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return _titled(fig, title)


def bars_figure(
    names: Sequence[str],
    panels: Sequence[Dict],
    title: str = "",
):
    """Horizontal bars, one row per name, one panel per measured quantity.
    Each panel is a dict with ``values``, optional ``errors`` (drawn as error
    bars), ``xlabel``, optional ``log`` (log x axis) and optional ``xlim``
    (values left of it are written at the left edge)."""
    fig = figure(3.3 * len(panels) + 2.2, 0.45 * len(names) + 1.3)
    axes = fig.subplots(1, len(panels), sharey=True, squeeze=False)[0]
    rows = list(range(len(names)))
    for j, (ax, panel) in enumerate(zip(axes, panels)):
        values = _values(panel["values"])
        errors = _values(panel["errors"]) if panel.get("errors") is not None else None
        ax.barh(rows, values, xerr=errors, color=[f"C{i}" for i in rows], alpha=0.8,
                capsize=3)
        if panel.get("log"):
            ax.set_xscale("log")
            _plain_labels(ax.xaxis)
        elif panel.get("xlim"):
            ax.set_xlim(*panel["xlim"])
        left = panel["xlim"][0] if panel.get("xlim") and not panel.get("log") else None
        for r, v in enumerate(values):
            end = v + (errors[r] if errors else 0.0)
            if left is not None and end < left:  # the bar ends left of the axis: say so
                ax.annotate(f"{v:.3g} (off scale)", (left, r), xytext=(3, 0), textcoords="offset points",
                            va="center", fontsize=7)
                continue
            ax.annotate(f"{v:.3g}", (end, r), xytext=(3, 0), textcoords="offset points",
                        va="center", fontsize=7)
        ax.set_xlabel(panel.get("xlabel", ""))
        ax.grid(axis="x", alpha=0.3)
        if j == 0:
            ax.set_yticks(rows, list(names), fontsize=8)
            ax.invert_yaxis()
    return _titled(fig, title)


def grouped_bars_figure(
    groups: Sequence[str],
    panels: Sequence[Dict],
    title: str = "",
    xlabel: str = "",
):
    """Vertical bars in groups (say one group per T), one colour per series
    (say one per implementation) that stays the same in every group and
    panel, with one legend; one panel per measured quantity, stacked. Each
    panel is a dict with ``values`` (``{series: [one value per group]}``; a
    nan draws no bar), ``ylabel``, optional ``log`` (log y axis), optional
    ``ref`` (a dashed horizontal line, e.g. 1 on a speed-up axis) and
    optional ``fmt`` (the number written on each bar, default ``"{:.3g}"``)."""
    series = list(dict.fromkeys(name for panel in panels for name in panel["values"]))
    width = 0.8 / len(series)
    fig = figure(max(6.0, 0.28 * len(series) * len(groups) + 3.0), 2.6 * len(panels) + 0.9)
    axes = fig.subplots(len(panels), 1, sharex=True, squeeze=False)[:, 0]
    for ax, panel in zip(axes, panels):
        fmt = panel.get("fmt", "{:.3g}")
        for i, name in enumerate(series):
            values = _values(panel["values"].get(name, [float("nan")] * len(groups)))
            xs = [g + (i - (len(series) - 1) / 2) * width for g in range(len(groups))]
            bars = ax.bar(xs, values, width, color=f"C{i}", label=name)
            for bar, v in zip(bars, values):
                if not math.isnan(v):
                    ax.annotate(fmt.format(v), (bar.get_x() + bar.get_width() / 2, v),
                                xytext=(0, 2), textcoords="offset points", ha="center",
                                va="bottom", fontsize=6)
        if panel.get("ref") is not None:
            ax.axhline(panel["ref"], color="0.3", ls="--", lw=1)
        if panel.get("log"):
            ax.set_yscale("log")
            _plain_labels(ax.yaxis)
        ax.set_ylabel(panel.get("ylabel", ""))
        ax.grid(axis="y", alpha=0.3)
        ax.margins(y=0.15)
    axes[-1].set_xticks(list(range(len(groups))), list(groups))
    if xlabel:
        axes[-1].set_xlabel(xlabel)
    axes[0].legend(fontsize=7, ncols=min(4, len(series)), loc="lower left",
                   bbox_to_anchor=(0, 1.02))
    return _titled(fig, title)
