"""Distributions of the LocalZO direction ``z`` and the maths they imply.

LocalZO replaces ``dS/du`` by the two-point estimate

.. math::

    G(u; z) = c\\,|z|^p\\,\\frac{\\mathbb{1}[|u| < \\delta |z|]}{2\\delta},
    \\qquad z \\sim \\lambda,

which depends on ``z`` only through ``|z|``. A :class:`Distribution` therefore
describes the law of ``|z|`` together with the constants ``p``, ``c`` and
``delta``, and knows the closed form of the expected gradient

.. math::

    g(u) = \\mathbb{E}_z[G(u; z)]
         = \\frac{c}{\\delta}\\int_{|u|/\\delta}^{\\infty} z^p \\lambda(z)\\,dz .

Three distributions come from the paper (``normal``, ``uniform``,
``laplace``, each with unit variance, ``p = 1``, ``c = 1``). Three are the
LocalZO *twins* of snnTorch's surrogates (``atan``, ``sigmoid``,
``fast_sigmoid``): ``lambda`` is chosen so that ``g`` is exactly
``snntorch.surrogate.atan(alpha)``, ``sigmoid(slope)`` or
``fast_sigmoid(slope)``. For a twin, ``delta`` is fixed by the surrogate's
parameter (the estimate does not depend on it), see ``docs/method.md``
section 3.

Sampling uses a closed form where one exists (normal, uniform, laplace,
fast_sigmoid) and an inverse-CDF table with linear interpolation otherwise
(atan, sigmoid). Tables are indexed by ``x = -log2(1 - U)`` for a uniform
``U``, so heavy tails are resolved down to probabilities of ``2**-32``.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Tuple

import torch

from ._checks import check_positive

__all__ = [
    "Distribution",
    "Normal",
    "Uniform",
    "Laplace",
    "ATanTwin",
    "SigmoidTwin",
    "FastSigmoidTwin",
    "DISTRIBUTIONS",
    "get_distribution",
]

SQRT3 = math.sqrt(3.0)
SQRT2 = math.sqrt(2.0)

#: Number of points and range (in ``x = -log2(1-U)``) of inverse-CDF tables.
TABLE_SIZE = 4096
TABLE_XMAX = 32.0

def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype estimates are computed in: float64 stays float64; float32,
    float16 and bfloat16 compute in float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


# --------------------------------------------------------------------------- #
# How |z| is made from one standard draw: the samplers ("kinds") the kernels  #
# switch on. Each law below names its sampler and the scale ``kparam`` the    #
# sampler applies; every path (reference, native, Triton) reads them here.    #
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class Sampler:
    """How one standard draw becomes ``|z|``.

    :param kind: the kernels' id of the sampler (``triton_common.abs_z``)
    :param normal: the standard draw is ``N(0, 1)`` (else ``U[0, 1)``)
    :param from_draw: ``|z|`` from draws ``r`` (may work in place on ``r``),
        ``(r, kparam, table) -> |z|``
    :param from_q: the quantile ``Q(1 - q)`` of ``|z|`` for ``q`` in (0, 1],
        in ``q``'s dtype, ``(q, kparam, table) -> |z|`` (far tails keep their
        precision in float64)
    """

    kind: int
    normal: bool
    from_draw: Callable
    from_q: Callable


def _lomax2_from_q(q, k, table):
    s = torch.sqrt(1.0 - q)
    return (s * (1.0 + s) / q).mul_(k)


def _lomax2_from_draw(r, k, table):
    s = r.sqrt_()
    return (s / (1.0 - s)).mul_(k)


#: ``|r| * kparam``, ``r ~ N(0, 1)``.
NORMAL = Sampler(0, True, lambda r, k, t: r.abs_().mul_(k),
                 lambda q, k, t: torch.special.ndtri(0.5 * q).neg_().mul_(k))
#: ``r * kparam``, ``r ~ U[0, 1)``.
UNIFORM = Sampler(1, False, lambda r, k, t: r.mul_(k), lambda q, k, t: (1.0 - q).mul_(k))
#: ``-log(1 - r) * kparam``: an exponential ``|z|``.
EXPONENTIAL = Sampler(2, False, lambda r, k, t: torch.log1p(-r).mul_(-k),
                      lambda q, k, t: torch.log(q).mul_(-k))
#: The law's inverse-CDF table at ``r`` (any law without a closed-form quantile).
TABLE = Sampler(3, False, lambda r, k, t: table_lookup(t, r.float()),
                lambda q, k, t: table_lookup_x(t, -torch.log2(q)))
#: ``sqrt(r) / (1 - sqrt(r)) * kparam``: the fast-sigmoid twin's ``|z|``.
LOMAX2 = Sampler(4, False, _lomax2_from_draw, _lomax2_from_q)

#: The samplers by kind.
SAMPLERS = (NORMAL, UNIFORM, EXPONENTIAL, TABLE, LOMAX2)
assert all(s.kind == i for i, s in enumerate(SAMPLERS))


class Distribution:
    """Law of the LocalZO direction ``z`` (symmetric) and its constants.

    Subclasses define the CDF of ``|z|``, a sampler of ``|z|`` and the closed
    form of the expected gradient. Instances are immutable, hashable by
    value, pickle and deep-copy.

    :param delta: step ``delta > 0`` of the two-point estimate
    :type delta: float
    """

    name: str = ""
    #: exponent ``p`` of ``|z|`` in the estimator, +1 or -1
    p: int = 1
    #: how ``|z|`` is drawn (:class:`Sampler`), and the scale it applies
    sampler: Sampler = TABLE
    kparam: float = 1.0
    #: whether the adaptive step (:class:`~snntorch_localzo.AdaptiveDelta`)
    #: supports the law (the paper's: unit variance, ``p = 1``, ``c = 1``)
    adaptive: bool = False
    #: upper end of the search interval of :meth:`table` (beyond the
    #: ``1 - 2**-32`` quantile of ``|z|``)
    _table_upper: float = 1e4

    def __init__(self, delta: float = 0.05):
        self.delta = check_positive("delta", delta)

    # ---------------------------------------------------------------- constants
    @property
    def c(self) -> float:
        """Constant ``c`` of the estimator (1 for ``p = +1`` unit-variance laws)."""
        return 1.0

    @property
    def scale(self) -> float:
        """``c / (2 delta)``: the estimate is ``scale * |z|**p`` when active."""
        return self.c / (2.0 * self.delta)

    def params(self) -> Dict[str, float]:
        """Parameters that identify the distribution (used by ``repr``/equality)."""
        return {"delta": self.delta}

    # ---------------------------------------------------------------- law of |z|
    def abs_cdf(self, x: torch.Tensor) -> torch.Tensor:
        """CDF of ``|z|`` at ``x >= 0``."""
        raise NotImplementedError

    def abs_sf(self, x: torch.Tensor) -> torch.Tensor:
        """``P(|z| > x)`` at ``x >= 0`` (float64; exact in the tail where a law
        has a closed form)."""
        return 1.0 - self.abs_cdf(x)

    def abs_quantile(self, q: float) -> float:
        """``F^{-1}(q)``: the level ``|z|`` stays below with probability ``q``."""
        # (a CPU tensor read with tolist: no device op, nothing a sync detector flags)
        tail = torch.full((1,), 1.0 - q, dtype=torch.float64)
        return self.sampler.from_q(tail, self.kparam, self._sampler_table(tail.device)).tolist()[0]

    def abs_sample(self, shape, *, device=None, dtype: torch.dtype = torch.float32,
                   generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Draws ``|z|`` with torch's random number generator (the law's
        sampler, as the operators draw)."""
        draw = torch.randn if self.sampler.normal else torch.rand
        r = draw(shape, device=device, dtype=dtype, generator=generator)
        return self.sampler.from_draw(r, self.kparam, self._sampler_table(r.device)).to(dtype)

    def _sampler_table(self, device) -> Optional[torch.Tensor]:
        return self.table().to(device) if self.sampler is TABLE else None

    def sample(self, shape, *, device=None, dtype: torch.dtype = torch.float32,
               generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Draws signed ``z`` (symmetric law) of the given shape."""
        if isinstance(shape, int):
            shape = (shape,)
        mag = self.abs_sample(shape, device=device, dtype=dtype, generator=generator)
        sign = torch.randint(0, 2, tuple(shape), device=device, generator=generator)
        return torch.where(sign.bool(), mag, -mag)

    # ---------------------------------------------------------------- gradients
    def expected_grad(self, u: torch.Tensor) -> torch.Tensor:
        """Closed form of ``E_z[G(u; z)]``, the surrogate gradient it equals."""
        raise NotImplementedError

    def active_prob(self, u: torch.Tensor, samples: int = 1) -> torch.Tensor:
        """Probability that ``G_m(u) != 0`` with ``m = samples`` directions:
        ``1 - F(|u| / delta)**m`` where ``F`` is the CDF of ``|z|``."""
        u = torch.as_tensor(u)
        x = u.to(torch.float64).abs() / self.delta
        if samples == 1:
            return self.abs_sf(x)
        return 1.0 - self.abs_cdf(x) ** samples

    def peak(self) -> float:
        """The expected gradient at threshold, ``g(0)``."""
        return float(self.expected_grad(torch.zeros((), dtype=torch.float64)))

    def integral(self) -> float:
        """Integral of the expected gradient over ``u``: ``c * E|z|**(p+1)``
        (``E[z**2]`` for ``p = 1``, ``c`` for ``p = -1``)."""
        return self.c * self.abs_moment(self.p + 1)

    def abs_moment(self, k: int) -> float:
        """``E|z|**k`` (only ``k = 0`` and ``k = 2`` are needed here)."""
        if k == 0:
            return 1.0
        if k == 2:
            return 1.0
        raise NotImplementedError

    def table(self) -> torch.Tensor:
        """Inverse-CDF table of ``|z|`` (float32, CPU, built once per
        distribution): ``TABLE_SIZE`` quantiles at ``U = 1 - 2**-x`` for ``x``
        evenly spaced on ``[0, TABLE_XMAX]``, read by :func:`table_lookup`."""
        key = self._table_key()
        if key not in _TABLES:
            _TABLES[key] = build_quantile_table(self.abs_cdf, self._table_upper)
        return _TABLES[key]

    def _table_key(self) -> Tuple:
        """What the law of ``|z|`` depends on (``delta`` only scales the estimate)."""
        return self._key()

    # ---------------------------------------------------------------- dunder
    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v:g}" for k, v in self.params().items())
        return f"{type(self).__name__}({args})"

    def _key(self) -> Tuple:
        return (type(self).__name__,) + tuple(sorted(self.params().items()))

    def __eq__(self, other) -> bool:
        return isinstance(other, Distribution) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __reduce__(self):
        return (type(self), tuple(self.params().values()))


# --------------------------------------------------------------------------- #
# The paper's three laws: unit variance, p = 1, c = 1, delta free.            #
# --------------------------------------------------------------------------- #
class Normal(Distribution):
    """``z ~ N(0, 1)``: the expected gradient is a Gaussian of width ``delta``.

    .. math::

        g(u) = \\frac{1}{\\delta\\sqrt{2\\pi}} e^{-u^2 / (2\\delta^2)}
    """

    name = "normal"
    sampler = NORMAL
    adaptive = True
    _table_upper = 10.0

    def abs_cdf(self, x):
        x = torch.as_tensor(x, dtype=torch.float64)
        return torch.erf(x / SQRT2)

    def abs_sf(self, x):
        x = torch.as_tensor(x, dtype=torch.float64)
        return torch.erfc(x / SQRT2)

    @property
    def denominator(self) -> float:
        """``delta sqrt(2 pi)``: what :meth:`expected_grad` divides
        ``exp(-v^2 / 2)`` by (the native expected value divides by it too)."""
        return self.delta * math.sqrt(2.0 * math.pi)

    def expected_grad(self, u):
        v = u.to(compute_dtype(u.dtype)) / self.delta
        return torch.exp(-0.5 * v * v) / self.denominator


class Uniform(Distribution):
    """``z ~ U[-sqrt(3), sqrt(3)]``: a parabolic bump of half-width ``sqrt(3) delta``.

    .. math::

        g(u) = \\frac{3 - u^2/\\delta^2}{4\\sqrt{3}\\,\\delta}
        \\quad (|u| < \\sqrt{3}\\delta),\\ 0 \\text{ otherwise}
    """

    name = "uniform"
    sampler = UNIFORM
    kparam = SQRT3
    adaptive = True
    _table_upper = SQRT3

    def abs_cdf(self, x):
        x = torch.as_tensor(x, dtype=torch.float64)
        return (x / SQRT3).clamp(0.0, 1.0)

    @property
    def denominator(self) -> float:
        """``4 sqrt(3) delta``: what :meth:`expected_grad` divides ``3 - v^2``
        by (the native expected value divides by it too)."""
        return 4.0 * SQRT3 * self.delta

    def expected_grad(self, u):
        v = u.to(compute_dtype(u.dtype)) / self.delta
        g = (3.0 - v * v) / self.denominator
        return torch.where(v.abs() < SQRT3, g, torch.zeros_like(g))


class Laplace(Distribution):
    """``z ~ Laplace(0, 1/sqrt(2))`` (unit variance); ``|z|`` is exponential.

    .. math::

        g(u) = \\frac{1}{2\\delta}\\left(\\frac{|u|}{\\delta}
        + \\frac{1}{\\sqrt{2}}\\right) e^{-\\sqrt{2}|u|/\\delta}
    """

    name = "laplace"
    sampler = EXPONENTIAL
    kparam = 1.0 / SQRT2
    adaptive = True
    _table_upper = 20.0

    def abs_cdf(self, x):
        x = torch.as_tensor(x, dtype=torch.float64)
        return -torch.expm1(-SQRT2 * x)

    def abs_sf(self, x):
        x = torch.as_tensor(x, dtype=torch.float64)
        return torch.exp(-SQRT2 * x)

    def expected_grad(self, u):
        v = u.to(compute_dtype(u.dtype)).abs() / self.delta
        return (v + 1.0 / SQRT2) * torch.exp(-SQRT2 * v) / (2.0 * self.delta)


# --------------------------------------------------------------------------- #
# Inverse-CDF tables for laws without a closed-form quantile.                  #
# --------------------------------------------------------------------------- #
_TABLES: Dict[Tuple, torch.Tensor] = {}


def table_lookup_x(table: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Linear interpolation in an inverse-CDF table at ``x = -log2(1 - U)``
    (the kernels do the same), in ``x``'s dtype."""
    pos = (x * ((TABLE_SIZE - 1) / TABLE_XMAX)).clamp_(0.0, TABLE_SIZE - 1.0)
    i0 = pos.floor().clamp_(max=TABLE_SIZE - 2)
    frac = pos - i0
    i0 = i0.long()
    lo = table[i0].to(x.dtype)
    hi = table[i0 + 1].to(x.dtype)
    return lo + frac * (hi - lo)


def table_lookup(table: torch.Tensor, U: torch.Tensor) -> torch.Tensor:
    """The table's quantile at the uniform draws ``U`` in [0, 1)."""
    return table_lookup_x(table, -torch.log2(1.0 - U))


def build_quantile_table(
    abs_cdf: Callable[[torch.Tensor], torch.Tensor], upper: float
) -> torch.Tensor:
    """Quantiles of ``|z|`` at ``U_j = 1 - 2**-x_j``, ``x_j`` uniform on
    ``[0, TABLE_XMAX]``, found by bisection in float64 on ``[0, upper]``."""
    x = torch.linspace(0.0, TABLE_XMAX, TABLE_SIZE, dtype=torch.float64)
    target = -torch.expm1(-x * math.log(2.0))  # 1 - 2**-x, accurate near 0
    lo = torch.zeros_like(x)
    hi = torch.full_like(x, upper)
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        below = abs_cdf(mid) < target
        lo = torch.where(below, mid, lo)
        hi = torch.where(below, hi, mid)
    return (0.5 * (lo + hi)).to(torch.float32)


class _TabulatedTwin(Distribution):
    """A twin whose ``|z|`` is sampled from its inverse-CDF table. The table
    does not depend on the twin's parameter (only ``delta`` does), so it is
    built once per class."""

    _table_upper = 1e4

    def _table_key(self) -> Tuple:
        return (type(self).__name__,)


class ATanTwin(_TabulatedTwin):
    """LocalZO twin of ``snntorch.surrogate.atan(alpha)``.

    ``z`` follows a Student-t law with 3 degrees of freedom scaled to unit
    variance, ``lambda(z) = (2/pi) (1 + z^2)^{-2}``, and
    ``delta = 2 / (pi alpha)`` (``c = 1``), so that

    .. math::

        g(u) = \\frac{\\alpha/2}{1 + (\\pi \\alpha u / 2)^2}

    exactly as snnTorch's ATan backward.

    :param alpha: snnTorch's ATan parameter. Defaults to 2.0
    :type alpha: float
    """

    name = "atan"
    _table_upper = 1e4  # P(|z| > 1e4) ~ 4e-13 < 2**-32

    def __init__(self, alpha: float = 2.0):
        self.alpha = check_positive("alpha", alpha)
        super().__init__(delta=2.0 / (math.pi * self.alpha))

    def params(self):
        return {"alpha": self.alpha}

    def abs_cdf(self, x):
        x = torch.as_tensor(x, dtype=torch.float64)
        return (2.0 / math.pi) * (x / (1.0 + x * x) + torch.atan(x))

    def expected_grad(self, u):
        u = u.to(compute_dtype(u.dtype))
        return (self.alpha / 2.0) / (1.0 + (math.pi / 2.0 * self.alpha * u) ** 2)


def _sigmoid_bump_slope(x: torch.Tensor) -> torch.Tensor:
    """``-h'(x) / x`` for ``h = s(1 - s)``, ``s`` the logistic function (x >= 0)."""
    s = torch.sigmoid(x)
    h = s * (1.0 - s)
    ratio = torch.where(x > 1e-6, (2.0 * s - 1.0) / x.clamp_min(1e-6), torch.full_like(x, 0.5))
    return h * ratio


#: ``2 * integral_0^inf -h'(v)/v dv`` for the logistic bump (docs/method.md section 3: 0.4262).
SIGMOID_TWIN_CONST = 0.42627839631749814


class SigmoidTwin(_TabulatedTwin):
    """LocalZO twin of ``snntorch.surrogate.sigmoid(slope)``.

    With ``s`` the logistic function and ``h = s (1 - s)``, the law is
    ``lambda(z) = -h'(kz) / (kz)`` up to normalisation, with
    ``k = 1/sqrt(0.4262)`` and ``delta = 1 / (slope sqrt(0.4262))`` (``c = 1``), so

    .. math::

        g(u) = k\\,s(ku)\\,(1 - s(ku)),\\quad k = \\text{slope}

    exactly as snnTorch's Sigmoid backward.

    :param slope: snnTorch's sigmoid slope ``k``. Defaults to 25
    :type slope: float
    """

    name = "sigmoid"
    _table_upper = 200.0  # tails decay like exp(-x / sqrt(0.4262))

    def __init__(self, slope: float = 25.0):
        self.slope = check_positive("slope", slope)
        super().__init__(delta=1.0 / (self.slope * math.sqrt(SIGMOID_TWIN_CONST)))

    def params(self):
        return {"slope": self.slope}

    def abs_cdf(self, x):
        # The |z| density is proportional to -h'(a z) / z; its CDF is
        # integrated numerically once (see _sigmoid_twin_cdf_grid).
        x = torch.as_tensor(x, dtype=torch.float64)
        grid, cdf = _sigmoid_twin_cdf_grid()
        return _interp(x.clamp(0.0, float(grid[-1])), grid, cdf)

    def expected_grad(self, u):
        u = u.to(compute_dtype(u.dtype))
        s = torch.sigmoid(self.slope * u)
        return self.slope * s * (1.0 - s)


_SIGMOID_GRID: Optional[Tuple[torch.Tensor, torch.Tensor]] = None


def _sigmoid_twin_cdf_grid() -> Tuple[torch.Tensor, torch.Tensor]:
    """CDF of ``|z|`` for the sigmoid twin on a fine grid (cumulative trapezoid,
    relative error below 1e-7)."""
    global _SIGMOID_GRID
    if _SIGMOID_GRID is None:
        a = 1.0 / math.sqrt(SIGMOID_TWIN_CONST)  # |z| = w / a with w the bump variable
        n = 400_001
        grid = torch.linspace(0.0, 200.0, n, dtype=torch.float64)
        dens = _sigmoid_bump_slope(a * grid)  # proportional to the |z| density
        h = grid[1] - grid[0]
        trap = torch.cumsum(0.5 * h * (dens[1:] + dens[:-1]), 0)
        cdf = torch.cat([torch.zeros(1, dtype=torch.float64), trap])
        cdf = cdf / cdf[-1]
        _SIGMOID_GRID = (grid, cdf)
    return _SIGMOID_GRID


def _interp(x: torch.Tensor, xp: torch.Tensor, fp: torch.Tensor) -> torch.Tensor:
    """Piecewise-linear interpolation on a uniform grid ``xp``."""
    step = float(xp[1] - xp[0])
    pos = (x - float(xp[0])) / step
    i0 = pos.floor().clamp(0, len(xp) - 2).long()
    frac = pos - i0.to(pos.dtype)
    return fp[i0] + frac * (fp[i0 + 1] - fp[i0])


class FastSigmoidTwin(Distribution):
    """LocalZO twin of ``snntorch.surrogate.fast_sigmoid(slope)``: the
    ``p = -1`` estimator with ``c = 2 / slope`` and
    ``lambda(z) = |z| / (1 + |z|)^3`` (``delta = 1 / slope``), so that

    .. math::

        g(u) = \\frac{1}{(1 + k|u|)^2},\\quad k = \\text{slope}

    exactly as snnTorch's FastSigmoid backward. ``|z|`` has the CDF
    ``(x / (1 + x))^2`` and is sampled in closed form.

    :param slope: snnTorch's fast-sigmoid slope ``k``. Defaults to 25
    :type slope: float
    """

    name = "fast_sigmoid"
    p = -1
    sampler = LOMAX2

    def __init__(self, slope: float = 25.0):
        self.slope = check_positive("slope", slope)
        super().__init__(delta=1.0 / self.slope)

    @property
    def c(self):
        return 2.0 / self.slope

    def params(self):
        return {"slope": self.slope}

    def abs_moment(self, k):
        if k in (0,):
            return 1.0
        raise ValueError("E|z|^k diverges for the fast_sigmoid twin when k >= 2")

    def abs_cdf(self, x):
        x = torch.as_tensor(x, dtype=torch.float64)
        return (x / (1.0 + x)) ** 2

    def expected_grad(self, u):
        u = u.to(compute_dtype(u.dtype))
        return 1.0 / (1.0 + self.slope * u.abs()) ** 2


#: Registry of distribution names accepted by :func:`snntorch_localzo.make`.
DISTRIBUTIONS = {
    cls.name: cls
    for cls in (Normal, Uniform, Laplace, ATanTwin, SigmoidTwin, FastSigmoidTwin)
}


#: Names of the laws the adaptive step supports.
ADAPTIVE_LAWS = tuple(name for name, cls in DISTRIBUTIONS.items() if cls.adaptive)


@functools.lru_cache(maxsize=None)
def adaptive_law_of(sampler_kind: int) -> Distribution:
    """The adaptive law (with the unit step) that sampler ``sampler_kind``
    draws: how an adaptive spec rebuilt from operator arguments knows its law."""
    for name in ADAPTIVE_LAWS:
        if DISTRIBUTIONS[name].sampler.kind == sampler_kind:
            return DISTRIBUTIONS[name](delta=1.0)
    raise ValueError(f"no adaptive law draws with sampler kind {sampler_kind}")


def get_distribution(dist="normal", **params) -> Distribution:
    """Builds a :class:`Distribution` from its name and parameters.

    :param dist: one of ``normal``, ``uniform``, ``laplace`` (parameter
        ``delta``), ``atan`` (``alpha``), ``sigmoid`` (``slope``),
        ``fast_sigmoid`` (``slope``), or a :class:`Distribution` instance
    :raises ValueError: unknown name or invalid parameter value
    :raises TypeError: a parameter that the distribution does not take
    """
    params = {k: v for k, v in params.items() if v is not None}
    if isinstance(dist, Distribution):
        if params:
            raise TypeError(
                f"parameters {sorted(params)} given with a Distribution instance; "
                "set them on the instance instead"
            )
        return dist
    if isinstance(dist, torch.Tensor):
        raise TypeError(
            "`dist` got a tensor: `spike_grad=localzo.make` was probably passed without "
            "calling it, so the neuron called make(mem_shift); write "
            "`spike_grad=localzo.make()`"
        )
    if not isinstance(dist, str):
        raise TypeError(
            f"`dist` must be a name or a Distribution, got {type(dist).__name__}"
        )
    try:
        cls = DISTRIBUTIONS[dist]
    except KeyError:
        raise ValueError(
            f"unknown `dist` {dist!r}; expected one of {sorted(DISTRIBUTIONS)}"
        ) from None
    allowed = set(cls().params())
    extra = set(params) - allowed
    if extra:
        hint = ""
        if "delta" in extra and cls.name in ("atan", "sigmoid", "fast_sigmoid"):
            hint = (
                f"; the {cls.name!r} twin's delta is fixed by its surrogate "
                "parameter (the estimate does not depend on it)"
            )
        raise TypeError(
            f"dist={dist!r} takes {sorted(allowed)}, not {sorted(extra)}{hint}"
        )
    return cls(**params)
