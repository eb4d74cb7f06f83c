"""The LocalZO spike-gradient object that snnTorch neurons take as ``spike_grad``."""

from __future__ import annotations

from typing import Optional

import torch

from ._checks import check_bool, check_count, check_float_tensor
from ._ops import layout
from .adaptive import AdaptiveDelta
from ._ops.spec import ZOSpec, spec_of
from ._ops.spike import spike
from .distributions import ADAPTIVE_LAWS, Distribution, Uniform, get_distribution
from .stats import ActivityMeter
from .step import FIXED, Step, sample_entries

__all__ = ["LocalZO", "make"]


class LocalZO:
    """Local zeroth-order spike gradient (Mukhoty et al., NeurIPS 2023).

    **Forward pass:** Heaviside step function shifted, in the input's dtype.

        .. math::

            S=\\begin{cases} 1 & \\text{if U > U$_{\\rm thr}$} \\\\
            0 & \\text{if U ≤ U$_{\\rm thr}$}
            \\end{cases}

    **Backward pass:** a random two-point estimate of :math:`∂S/∂U`, drawn
    afresh at every call from ``samples`` directions :math:`z_i \\sim λ`:

        .. math::

            \\frac{∂S}{∂U} ≈ \\frac{1}{m}\\sum_{i=1}^{m}
            c\\,|z_i|^p\\,\\frac{\\mathbb{1}[|U - U_{\\rm thr}| < δ|z_i|]}{2δ}

    It is exactly zero for every neuron farther than :math:`δ \\max_i|z_i|`
    from threshold (the sparsity LocalZO trains with) and its expected value
    is a surrogate gradient, available as :meth:`expected_grad`.

    By default (``delta=None`` with ``normal``, ``uniform`` or ``laplace``) the
    step is *adaptive*: each call computes, for each sample, a step
    :math:`δ_b` from that sample's own membrane
    (:class:`~snntorch_localzo.adaptive.AdaptiveDelta`: the sample's entries
    nearest to threshold in the band, more while it is silent, every channel
    reachable; nothing taken from the other samples of the batch), and the
    expected value is the law's surrogate of width :math:`δ_b` scaled to
    height one at threshold (for the default ``uniform`` law the parabola
    :math:`\\max(0, 1 - u^2/3δ_b^2)`, for ``normal`` the bump
    :math:`\\exp(-u^2/2δ_b^2)`); a layer of at most 64 neurons (an output
    layer) gets that expected value itself, without a draw. A number
    ``delta`` fixes the step.

    Example::

        import snntorch as snn
        import snntorch_localzo as localzo

        lif = snn.Leaky(beta=0.9, spike_grad=localzo.make())             # adaptive step
        lif = snn.Leaky(beta=0.9, spike_grad=localzo.make(delta=0.05))   # fixed step

    :param dist: distribution of :math:`z`: ``"normal"``, ``"uniform"``,
        ``"laplace"`` (parameter ``delta``), or the twin of an snnTorch
        surrogate, ``"atan"`` (``alpha``), ``"sigmoid"`` (``slope``),
        ``"fast_sigmoid"`` (``slope``), or a
        :class:`~snntorch_localzo.distributions.Distribution`.
        Defaults to None: ``"uniform"`` with the adaptive step (the law it
        trains best with at the fewest active neurons, ``docs/method.md``
        section 7), ``"normal"`` with a number ``delta`` (the paper's law, as
        in earlier releases)
    :type dist: str or Distribution, optional

    :param delta: step :math:`δ > 0` of the estimate, for ``normal``,
        ``uniform`` and ``laplace``, or an
        :class:`~snntorch_localzo.adaptive.AdaptiveDelta` rule. Defaults to
        None: ``AdaptiveDelta()``
    :type delta: float or AdaptiveDelta, optional

    :param samples: number of directions :math:`m` averaged per neuron.
        Defaults to 1
    :type samples: int, optional

    :param alpha: ``atan`` twin parameter (snnTorch's ATan ``alpha``).
        Defaults to 2.0
    :type alpha: float, optional

    :param slope: ``sigmoid`` / ``fast_sigmoid`` twin parameter (snnTorch's
        ``slope``). Defaults to 25
    :type slope: float, optional

    :param track: record the fraction of non-zero estimates in backward
        (see :attr:`active_fraction`). Defaults to False
    :type track: bool, optional

    :param sampling: how the active entries are drawn. ``"law"``: as above,
        an entry is active when :math:`|U - U_{\\rm thr}| < δ|z_i|`.
        ``"gradient"``: in each sample the same expected number of active
        entries, drawn with probabilities proportional to
        :math:`|∂L/∂S \\cdot g(U)|` (capped at 1; :math:`g` the expected
        value, ``∂L/∂S`` the gradient reaching the spike), each active
        estimate :math:`g(U)` divided by its probability: the same expected
        gradient with less variance (``docs/method.md`` section 8). For
        float32 with the uniform law and one direction (``make``'s own) one
        C pass (CPU) or one Triton kernel (CUDA) draws it; elsewhere the
        plain PyTorch path. ``"auto"``: for ``make()``'s own estimate
        (uniform law, one direction, adaptive step) ``"gradient"`` in the
        float32 calls of the spike function (snnTorch's neurons,
        ``localzo.Leaky``'s steps) and ``"law"`` in the sequence layers
        (whose forward draws, and whose sparse backward is built on that
        draw), other dtypes and :meth:`estimate`; ``"law"`` for every other
        estimate. Defaults to ``"auto"``
    :type sampling: str, optional
    """

    def __init__(
        self,
        dist=None,
        delta: Optional[float] = None,
        samples: int = 1,
        *,
        alpha: Optional[float] = None,
        slope: Optional[float] = None,
        track: bool = False,
        sampling: str = "auto",
    ):
        if sampling not in SAMPLINGS:
            raise ValueError(f"`sampling` must be one of {SAMPLINGS}, got {sampling!r}")
        self.sampling = sampling
        self._step: Step = FIXED
        if dist is None:
            dist = default_law(delta)
        if isinstance(dist, str) and dist in ADAPTIVE_LAWS and (
            delta is None or isinstance(delta, AdaptiveDelta)
        ):
            self._step = AdaptiveDelta() if delta is None else delta
            delta = 1.0  # the unit step the operators see (spec.py)
        elif isinstance(delta, AdaptiveDelta):
            raise TypeError(
                f"an AdaptiveDelta `delta` needs dist in {ADAPTIVE_LAWS}, got {dist!r}"
            )
        self.dist: Distribution = get_distribution(
            dist, delta=delta, alpha=alpha, slope=slope
        )
        self.samples = check_count("samples", samples)
        self._spec = self._build_spec()
        self.meter: Optional[ActivityMeter] = ActivityMeter() if check_bool("track", track) else None

    # ------------------------------------------------------------------ call
    def __call__(self, mem_shift: torch.Tensor) -> torch.Tensor:
        """Spikes ``(mem_shift > 0)`` in ``mem_shift``'s dtype, with the
        LocalZO backward."""
        check_float_tensor("mem_shift", mem_shift)
        return spike(mem_shift, self.spec, self.meter)

    @property
    def spec(self) -> ZOSpec:
        """The estimate's constants as the operators take them (built once;
        with ``sampling="auto"`` each call resolves it,
        :meth:`~snntorch_localzo._ops.spec.ZOSpec.resolved`)."""
        return self._spec

    def _build_spec(self) -> ZOSpec:
        own = type(self.dist) is Uniform and self.samples == 1 and self._step.adaptive  # (make()'s estimate)
        return spec_of(self.dist, self.samples, self._step, self.sampling == "gradient",
                       self.sampling == "auto" and own)

    # ------------------------------------------------------------------ theory
    @property
    def adaptive(self) -> bool:
        """Whether the step is adaptive (:attr:`rule`) rather than fixed."""
        return self._step.adaptive

    @property
    def rule(self) -> Optional[AdaptiveDelta]:
        """The :class:`~snntorch_localzo.adaptive.AdaptiveDelta` rule of an
        adaptive step, else None."""
        return self._step if self._step.adaptive else None

    @property
    def delta(self):
        """Step :math:`δ` of the estimate (fixed by the surrogate for twins),
        or the :class:`~snntorch_localzo.adaptive.AdaptiveDelta` rule."""
        return self._step if self._step.adaptive else self.dist.delta

    def step(self, u: torch.Tensor) -> torch.Tensor:
        """The step a backward call on ``u = mem - threshold`` uses: the
        rule's, from each sample's own membrane (one per entry, shaped like
        ``u`` of shape ``[batch, *neurons]``; see
        :meth:`~snntorch_localzo.adaptive.AdaptiveDelta.delta`), or the fixed
        :math:`δ` as a 0-d tensor."""
        return self._step.delta_of(torch.as_tensor(u), self.dist, self.samples)

    def expected_grad(self, u: torch.Tensor) -> torch.Tensor:
        """The surrogate gradient the estimate equals on average, at ``u``.
        With the adaptive step: given the step of each sample (:meth:`step`,
        ``u`` taken as one call), :math:`g_1(u/δ_b)/g_1(0)`, the law's
        surrogate of width :math:`δ_b` scaled to height one (for the uniform
        law :math:`\\max(0, 1 - u^2/3δ_b^2)`, for the normal law
        :math:`\\exp(-u^2/2δ_b^2)`); a sample's value does not depend on
        the other samples of ``u``."""
        return self._step.expected_grad(self.dist, torch.as_tensor(u), self.samples)

    def active_prob(self, u: torch.Tensor, grad_out: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Probability that the estimate at ``u`` is non-zero:
        :math:`1 - F(|u|/δ)^m` with :math:`F` the CDF of :math:`|z|` (with the
        adaptive step, :math:`δ = δ_b` of each sample of ``u`` as one call).
        With ``sampling="gradient"``, the probability for the incoming
        gradient ``grad_out`` (shaped like ``u``; None: ones)."""
        u = torch.as_tensor(u)
        spec = self.spec.resolved(u.dtype)
        if spec.weighted and not self._step.is_exact(sample_entries(u.shape)):
            from ._ops.weighted import weighted_probability

            return weighted_probability(spec.scale(u), grad_out, spec)
        return self._step.active_prob(self.dist, u, self.samples)

    def estimate(self, mem_shift: torch.Tensor) -> torch.Tensor:
        """One draw of the estimate :math:`G_m` of :math:`∂S/∂U` at
        ``mem_shift``, outside autograd (for learning rules that use the spike
        gradient as a local factor, such as OPZO's). Float32 (float64 for
        float64 input), shaped like ``mem_shift``; exactly zero away from
        threshold. Drawn from torch's generator (the expected value itself for
        a call the step gives it, :meth:`Step.is_exact
        <snntorch_localzo.step.Step.is_exact>`); counted by the meter when
        tracking."""
        from ._ops.planner import Path, spike_path
        from ._ops.spike.reference import draw_estimate, exact_estimate

        check_float_tensor("mem_shift", mem_shift)
        u = mem_shift.detach()
        spec = self.spec.resolved(u.dtype, call=False)
        acc = layout.accumulator(self.meter, u.device)
        if spike_path(u, spec) is Path.EXACT:
            return exact_estimate(spec.scale(u), spec, acc)
        return draw_estimate(spec.scale(u), spec, spec.table(u.device), acc)

    def sample(self, shape, **kwargs) -> torch.Tensor:
        """Draws directions :math:`z` (keyword arguments as ``torch.randn``)."""
        return self.dist.sample(shape, **kwargs)

    # ------------------------------------------------------------------ sparsity
    @property
    def track(self) -> bool:
        """Whether backward passes are being counted."""
        return self.meter is not None

    @track.setter
    def track(self, on: bool) -> None:
        if on and self.meter is None:
            self.meter = ActivityMeter()
        elif not on:
            self.meter = None

    @property
    def active_fraction(self) -> float:
        """Fraction of non-zero estimates over the backward calls since the
        last :meth:`reset_stats` (needs ``track=True``; 0.0 before the first
        counted backward pass)."""
        if self.meter is None:
            raise RuntimeError(
                "sparsity is not tracked; create with make(..., track=True) "
                "or set `.track = True`"
            )
        return self.meter.fraction

    def reset_stats(self) -> None:
        """Starts a new counting window (no-op when not tracking)."""
        if self.meter is not None:
            self.meter.reset()

    # ------------------------------------------------------------------ dunder
    def __repr__(self) -> str:
        if self._step.adaptive:
            params = f"delta={self._step!r}"
        else:
            params = ", ".join(f"{k}={v:g}" for k, v in self.dist.params().items())
        extra = ", track=True" if self.track else ""
        if self.sampling != "auto":
            extra += f", sampling={self.sampling!r}"
        return f"LocalZO(dist={self.dist.name!r}, {params}, samples={self.samples}{extra})"

    def __eq__(self, other) -> bool:
        return (
            isinstance(other, LocalZO)
            and self.dist == other.dist
            and self.samples == other.samples
            and self._step == other._step
            and self.sampling == other.sampling
        )

    def __hash__(self) -> int:
        return hash((self.dist, self.samples, self._step, self.sampling))

    def __getstate__(self):
        # counts are runtime state: a copy or a loaded model starts afresh
        return {"dist": self.dist, "samples": self.samples, "track": self.track, "rule": self.rule,
                "sampling": self.sampling}

    def __setstate__(self, state):
        self.dist = state["dist"]
        self.samples = state["samples"]
        # pickles from before the adaptive step have no rule: a fixed step
        self._step = state.get("rule") or FIXED
        self.sampling = state.get("sampling", "law")  # (pickles from before it: the law's)
        self._spec = self._build_spec()
        self.meter = ActivityMeter() if state["track"] else None


def default_law(delta) -> str:
    """The law of :math:`z` when ``dist`` is not given: ``"uniform"`` with the
    adaptive step (``delta`` None or an
    :class:`~snntorch_localzo.adaptive.AdaptiveDelta`), ``"normal"`` with a
    fixed one."""
    return ADAPTIVE_DEFAULT_LAW if delta is None or isinstance(delta, AdaptiveDelta) else FIXED_DEFAULT_LAW


#: The law of ``make()``: at the same bands, the uniform law trained the four
#: nets of ``benchmarks/defaults.py`` as well as the normal law with 9-36%
#: fewer active entries (its estimate vanishes beyond ``sqrt(3) delta``;
#: ``docs/method.md`` section 7).
ADAPTIVE_DEFAULT_LAW = "uniform"
#: The law of ``make(delta=x)``: the paper's, unchanged since the first release.
FIXED_DEFAULT_LAW = "normal"
#: How the active entries are drawn (:class:`LocalZO`'s ``sampling``).
SAMPLINGS = ("auto", "law", "gradient")


def make(
    dist=None,
    delta: Optional[float] = None,
    samples: int = 1,
    *,
    alpha: Optional[float] = None,
    slope: Optional[float] = None,
    track: bool = False,
    sampling: str = "auto",
) -> LocalZO:
    """LocalZO spike gradient for any snnTorch neuron's ``spike_grad``.

    ``make()`` is LocalZO with uniform directions and the adaptive step
    (:class:`~snntorch_localzo.adaptive.AdaptiveDelta`, one step per sample
    from its own membrane), which trains fully connected and convolutional
    snnTorch networks alike (``benchmarks/defaults.py``);
    ``make(delta=0.05)`` fixes the step (normal directions, the paper's);
    ``make("atan", alpha=2.0)`` has exactly the expected gradient of
    ``snntorch.surrogate.atan(alpha=2.0)`` (likewise ``"sigmoid"`` and
    ``"fast_sigmoid"`` with ``slope``). ``make()`` draws the active entries
    of the spike function's float32 calls by the incoming gradient (less
    variance, the same expected gradient and count; ``sampling="auto"``),
    those of the sequence layers by the law; ``sampling="law"`` or
    ``"gradient"`` makes one choice everywhere. Arguments as :class:`LocalZO`.

    Example::

        import snntorch as snn
        import snntorch_localzo as localzo

        lif = snn.Leaky(beta=0.9, spike_grad=localzo.make())
        lif = snn.Leaky(beta=0.9, spike_grad=localzo.make(delta=0.05))  # fixed step
    """
    return LocalZO(dist, delta, samples, alpha=alpha, slope=slope, track=track, sampling=sampling)
