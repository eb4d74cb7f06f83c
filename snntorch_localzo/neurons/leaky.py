"""``localzo.Leaky``: a drop-in for ``snntorch.Leaky`` trained with LocalZO."""

from __future__ import annotations

import inspect

import snntorch as snn
import torch

from .._checks import check_beta, check_float_tensor, check_state
from .._ops.leaky import (
    RESET_NONE, RESET_SUBTRACT, RESET_ZERO, LeakyParams, leaky_seq, leaky_step, run_c_spike_step,
)
from .._ops.planner import Path, c_spike_step, leaky_path
from ..estimator import LocalZO, make

__all__ = ["Leaky"]

_PARENT_INIT = inspect.signature(snn.Leaky.__init__)
#: snnTorch >= 0.8: ``forward(input_, mem=None)`` with the state in ``self.mem``
#: (0.7 kept states in ``_SpikeTensor`` objects and always takes the reference path).
MODERN_SNNTORCH = hasattr(snn.Leaky, "_init_mem") and hasattr(snn.Leaky, "_base_sub")
_STATE_FUNCTIONS = (
    {
        snn.Leaky._base_sub: RESET_SUBTRACT,
        snn.Leaky._base_zero: RESET_ZERO,
        snn.Leaky._base_int: RESET_NONE,
    }
    if MODERN_SNNTORCH
    else {}
)


class Leaky(snn.Leaky):
    """
    First-order leaky integrate-and-fire neuron trained with LocalZO: a
    drop-in for :class:`snntorch.Leaky` that takes the same constructor
    arguments as the installed snnTorch and gives exactly the same forward
    values (``spk``, ``mem``), with ``spike_grad`` defaulting to
    :func:`snntorch_localzo.make` (uniform directions, the adaptive step).

    .. math::

            U[t+1] = βU[t] + I_{\\rm in}[t+1] - RU_{\\rm thr}

    With a LocalZO ``spike_grad`` each time step runs fused: on CUDA
    (float32, float16, bfloat16) as Triton kernels (reset, state update,
    threshold, spike; the LocalZO directions drawn in-kernel from a Philox
    stream seeded by torch's generator), keeping one byte per neuron
    between the passes (which directions were active, and the reset flag)
    instead of snnTorch's full-precision membrane copies; on the CPU as the
    native path, which draws directions only where the estimate can be
    non-zero and keeps only the active entries. Where the spike function's
    backward is one C pass (on the CPU, ``make()``'s float32 steps), a step
    is one step of the native scan in forward and that C pass in backward,
    with the values and gradients of snnTorch's forward (which calls the
    spike function a second time for the reset).

    Cases the fused paths do not cover take snnTorch's own forward with the
    same results: ``inhibition``, ``state_quant``, ``reset_delay=False``,
    learnable or per-neuron ``beta`` / ``threshold`` /
    ``graded_spikes_factor``, a spike gradient other than LocalZO, and
    snnTorch 0.7 (on CUDA also float64 and more than 7 LocalZO samples).
    ``init_hidden``, ``output``, ``snntorch.utils.reset``, ``detach_hidden``
    and ``reset_hidden`` behave as in snnTorch. When a fused path runs,
    ``self.reset`` is not updated.

    Example::

        import torch
        import torch.nn as nn
        import snntorch_localzo as localzo

        net = nn.Sequential(
            nn.Linear(784, 256),
            localzo.Leaky(beta=0.9, init_hidden=True),
            nn.Linear(256, 10),
            localzo.Leaky(beta=0.9, init_hidden=True, output=True),
        )

    :param beta: membrane potential decay rate, clipped to [0, 1]
    :type beta: float or torch.tensor

    :param threshold: threshold for :math:`mem` to reach in order to
        generate a spike `S=1`. Defaults to 1
    :type threshold: float, optional

    :param spike_grad: spike gradient. Defaults to ``localzo.make()``; any
        snnTorch surrogate also works (reference path)
    :type spike_grad: LocalZO or surrogate gradient function, optional

    All other parameters (``surrogate_disable``, ``init_hidden``,
    ``inhibition``, ``learn_beta``, ``learn_threshold``, ``reset_mechanism``,
    ``state_quant``, ``output``, ``graded_spikes_factor``,
    ``learn_graded_spikes_factor``, ``reset_delay`` where the installed
    snnTorch has it) are those of :class:`snntorch.Leaky`.

    Inputs: \\input_, mem_0
        - **input_** of shape `(batch, input_size)`: input features
        - **mem_0** of shape `(batch, input_size)`: initial membrane potential

    Outputs: spk, mem_1
        - **spk** of shape `(batch, input_size)`: output spikes
        - **mem_1** of shape `(batch, input_size)`: next membrane potential
    """

    def __init__(self, *args, **kwargs):
        bound = _PARENT_INIT.bind(self, *args, **kwargs)
        arguments = dict(bound.arguments)
        arguments.pop("self")
        if arguments.get("spike_grad") is None:
            arguments["spike_grad"] = make()
        check_beta(arguments["beta"])
        super().__init__(**arguments)

    # ------------------------------------------------------------------ fused path
    def _fused_reset_mechanism(self):
        """The reset the fused kernel would apply, or None if it does not apply."""
        if not MODERN_SNNTORCH or not isinstance(self.spike_grad, LocalZO):
            return None
        if self.surrogate_disable or self.inhibition or self.state_quant:
            return None
        if not getattr(self, "reset_delay", True):
            return None
        # snnTorch fixes the state function when the neuron is built
        return _STATE_FUNCTIONS.get(getattr(self.state_function, "__func__", None))

    def _params(self, reset_mechanism: int) -> LeakyParams:
        return LeakyParams(self.beta, self.threshold, self.graded_spikes_factor, reset_mechanism)

    def forward(self, input_, *args, **kwargs):
        check_float_tensor("input_", input_)
        mem = args[0] if args else kwargs.get("mem")
        state = check_state("mem", mem, "input_", input_, input_.shape)
        if state is None and isinstance(mem, torch.Tensor) and mem.numel() > 1:
            # a zero state of another shape or dtype means zero; snnTorch 0.7
            # cannot take one, so hand every snnTorch the zero it means
            mem = torch.zeros_like(input_)
            if args:
                args = (mem,) + tuple(args[1:])
            else:
                kwargs["mem"] = mem
        reset_mechanism = self._fused_reset_mechanism()
        if reset_mechanism is not None:
            out = self._forward_fused(input_, mem, state, reset_mechanism)
            if out is not None:
                return out
        return super().forward(input_, *args, **kwargs)

    def _forward_fused(self, input_, mem, state, reset_mechanism):
        """snnTorch's forward with the fused step; None when it does not apply.
        ``state``: the checked ``mem`` argument (None: zero)."""
        if mem is None:
            state = self.mem if isinstance(self.mem, torch.Tensor) else None
            if state is not None and state.shape != input_.shape:
                state = None  # snnTorch starts from a zero membrane
        params = self._params(reset_mechanism)
        spec = self.spike_grad.spec
        # one C step where the spike function's backward is a C pass (leaky_path's reference then)
        c_step = c_spike_step(input_, state, params, spec)
        path = None if c_step else leaky_path(input_, state, params, spec)
        if path is Path.REFERENCE:
            return None  # (a state of another dtype too: snnTorch promotes)
        if self.init_hidden and mem is not None:
            raise TypeError(
                "`mem` should not be passed as an argument while `init_hidden=True`"
            )
        if c_step:
            spk, self.mem = run_c_spike_step(input_, state, params, spec, self.spike_grad.meter)
        else:
            spk, self.mem = leaky_step(input_, state, params, spec, self.spike_grad.meter, path)
        if self.output:
            return spk, self.mem
        elif self.init_hidden:
            return spk
        return spk, self.mem

    # ------------------------------------------------------------------ sequence mode
    def forward_sequence(self, input_, mem=None):
        """Runs a whole sequence at once: ``input_`` of shape ``[T, batch, ...]``.

        Equal to calling the neuron T times (same spikes and membranes; same
        gradients given the same LocalZO directions), but with a LocalZO
        ``spike_grad`` the time loop runs fused: inside Triton kernels on
        CUDA, as the native scan on the CPU. Cases the fused paths do not
        cover run the step loop.

        A sequence starts from rest (a zero membrane) unless ``mem`` is
        passed, as snnTorch 1.0's sequence neurons (``snntorch.LinearLeaky``)
        and :class:`~snntorch_localzo.LinearLeaky`: the same input gives the
        same output at every call, and no graph of an earlier call is reused
        (in a training loop nothing needs resetting or detaching). To continue
        a sequence, pass its last membrane: ``mem=mems[-1]`` (or
        ``mem=mems[-1].detach()`` to truncate backpropagation there).

        :param input_: input current of shape ``[T, batch, ...]``
        :param mem: initial membrane of shape ``[batch, ...]``. Defaults to
            None: zero (not allowed with ``init_hidden=True``, which always
            starts from rest)
        :return: ``(spk, mem)``, each of shape ``[T, batch, ...]`` (``mem``
            holds the membrane after every step), or ``spk`` alone when
            ``init_hidden=True`` and ``output=False``. The neuron's state
            ``self.mem`` becomes the last membrane (for step mode after the
            sequence; the next ``forward_sequence`` ignores it).
        """
        check_float_tensor("input_", input_)
        if input_.dim() < 2:
            raise ValueError(
                "`input_` must be a sequence tensor of shape [T, batch, ...] (at least "
                f"2 dimensions), got {tuple(input_.shape)}"
            )
        state = check_state("mem", mem, "input_", input_, input_.shape[1:])
        if input_.shape[0] == 0:  # an empty sequence: nothing happens
            empty = torch.zeros_like(input_)
            return empty if self.init_hidden and not self.output else (empty, empty.clone())
        if self.init_hidden and mem is not None:
            raise TypeError(
                "`mem` should not be passed as an argument while `init_hidden=True`"
            )
        reset_mechanism = self._fused_reset_mechanism()
        path = Path.REFERENCE
        if reset_mechanism is not None:
            params = self._params(reset_mechanism)
            path = leaky_path(input_, state, params, self.spike_grad.spec, input_.shape[0])
        if path is not Path.REFERENCE:
            spk, mems = leaky_seq(
                input_, state, params, self.spike_grad.spec, self.spike_grad.meter, path
            )
            self.mem = mems[-1]
        else:
            spk, mems = self._sequence_by_steps(input_, mem)
        if self.init_hidden and not self.output:
            return spk
        return spk, mems

    def _sequence_by_steps(self, input_, mem):
        """The step loop (reference path), with snnTorch's state handling,
        from rest when ``mem`` is None."""
        spikes, mems = [], []
        if mem is None:
            rest = torch.zeros_like(input_[0])
            if self.init_hidden:
                self.mem = rest
            else:
                mem = rest
        for t in range(input_.shape[0]):
            if self.init_hidden:
                out = self.forward(input_[t])
                spk, m = (out if isinstance(out, tuple) else (out, self.mem))
            else:
                spk, m = self.forward(input_[t], mem)
            if not self.init_hidden:
                mem = m
            spikes.append(spk)
            mems.append(m)
        return torch.stack(spikes), torch.stack(mems)


def _signature_with_localzo_default() -> inspect.Signature:
    params = [
        p.replace(default=None) if p.name == "spike_grad" else p
        for p in _PARENT_INIT.parameters.values()
    ]
    return _PARENT_INIT.replace(parameters=params)


Leaky.__init__.__signature__ = _signature_with_localzo_default()
