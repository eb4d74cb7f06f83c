"""``localzo.LinearLeaky``: a linear layer and a Leaky neuron over a whole
sequence, with the sparse LocalZO backward."""

from __future__ import annotations

from torch import nn
import snntorch as snn

from .._checks import check_beta, check_float_tensor, check_state
from .._ops.leaky import RESETS, LeakyParams
from .._ops.linear_leaky import linear_leaky
from .._ops.linear_leaky import reference as linear_reference
from ..estimator import LocalZO, make

__all__ = ["LinearLeaky"]


class LinearLeaky(snn.LIF):
    """
    A linear projection followed by a Leaky neuron, applied to a whole
    sequence ``[T, batch, in_features]`` at once, trained with LocalZO.
    Named and parameterised like snnTorch 1.0's :class:`snntorch.LinearLeaky`
    (``beta, in_features, out_features, bias, device, dtype, threshold,
    spike_grad, ...``, the internal ``nn.Linear`` as ``self.linear``), but
    with snnTorch's reset (``reset_mechanism``, subtractive by default): at
    every step

    .. math::

            I[t] = W x[t] + b, \\qquad U[t] = βU[t-1] + I[t] - R\\,U_{\\rm thr},
            \\qquad S[t] = Θ(U[t] - U_{\\rm thr})

    exactly as ``nn.Linear`` followed by :class:`snntorch.Leaky` stepped T
    times (snnTorch >= 0.8; 0.7's Leaky subtracted the threshold before the
    decay).

    With a LocalZO ``spike_grad`` the forward is one matrix product for all
    steps and one fused scan (Triton kernels on CUDA, the native path on the
    CPU); the backward uses that LocalZO gradients are exactly zero almost
    everywhere:

    * the weight gradient is summed over the active entries only, with the
      input trace ``trace[t] = β trace[t-1] + x[t]`` (subtractive or no
      reset, fixed scalar ``beta``, membrane output unused by the loss, and
      a layer wide enough for the sparse sum to pay off; otherwise one dense
      matrix product);
    * on the CPU, the input gradient is computed only where the layer below
      has a non-zero estimate, when that layer is a ``LinearLeaky`` or
      ``Leaky.forward_sequence`` of this package whose spikes come in
      unchanged (otherwise, and on CUDA, one dense matrix product). The
      gradient of that intermediate spike tensor is then zero wherever the
      layer below ignores it.

    Other cases (learnable or per-neuron ``beta``/``threshold``/
    ``graded_spikes_factor``, another spike gradient) run the dense
    reference with the same results.

    Example::

        import torch
        import snntorch_localzo as localzo

        lif1 = localzo.LinearLeaky(0.9, 700, 256)
        lif2 = localzo.LinearLeaky(0.9, 256, 20)
        x = (torch.rand(100, 128, 700) < 0.05).float()   # [T, batch, features]
        spk1, _ = lif1(x)
        spk2, mem2 = lif2(spk1)   # spk1 unchanged: sparse input gradient

    :param beta: membrane decay rate, clipped to [0, 1]
    :type beta: float or torch.tensor
    :param in_features: input features
    :type in_features: int
    :param out_features: neurons
    :type out_features: int
    :param bias: linear bias. Defaults to True
    :param device: device of the linear layer's parameters
    :param dtype: dtype of the linear layer's parameters
    :param threshold: firing threshold. Defaults to 1.0
    :param spike_grad: spike gradient. Defaults to ``localzo.make()``
    :param surrogate_disable: forward only, no surrogate (snnTorch's meaning)
    :param learn_beta: learnable ``beta``. Defaults to False
    :param learn_threshold: learnable threshold. Defaults to False
    :param reset_mechanism: "subtract", "zero" or "none". Defaults to "subtract"
    :param output: if True return ``(spk, mem)``, else ``mem`` only (as
        snnTorch's LinearLeaky). Defaults to True
    :param graded_spikes_factor: spike amplitude. Defaults to 1.0
    :param learn_graded_spikes_factor: learnable amplitude. Defaults to False
    :param sparse: use the sparse backward where it applies. Defaults to True

    Inputs: \\input_, mem_0
        - **input_** of shape `(T, batch, in_features)`
        - **mem_0** of shape `(batch, out_features)`: initial membrane
          (optional, zero by default)

    Outputs: spk, mem
        - **spk** of shape `(T, batch, out_features)`
        - **mem** of shape `(T, batch, out_features)`: membrane after each step
    """

    def __init__(
        self,
        beta,
        in_features,
        out_features,
        bias=True,
        device=None,
        dtype=None,
        threshold=1.0,
        spike_grad=None,
        surrogate_disable=False,
        learn_beta=False,
        learn_threshold=False,
        reset_mechanism="subtract",
        output=True,
        graded_spikes_factor=1.0,
        learn_graded_spikes_factor=False,
        sparse=True,
    ):
        check_beta(beta)
        super().__init__(
            beta=beta,
            threshold=threshold,
            spike_grad=make() if spike_grad is None else spike_grad,
            surrogate_disable=surrogate_disable,
            learn_beta=learn_beta,
            learn_threshold=learn_threshold,
            reset_mechanism=reset_mechanism,
            output=output,
            graded_spikes_factor=graded_spikes_factor,
            learn_graded_spikes_factor=learn_graded_spikes_factor,
        )
        self.linear = nn.Linear(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self.sparse = bool(sparse)

    @property
    def in_features(self) -> int:
        return self.linear.in_features

    @property
    def out_features(self) -> int:
        return self.linear.out_features

    def forward(self, input_, mem=None):
        check_float_tensor("input_", input_)
        if input_.dim() != 3:
            raise ValueError(
                "`input_` must be a tensor of shape [T, batch, in_features], got "
                f"{tuple(input_.shape)}"
            )
        if input_.shape[-1] != self.in_features:
            raise ValueError(
                f"`input_` has {input_.shape[-1]} features, expected in_features="
                f"{self.in_features}"
            )
        if mem is not None:
            check_float_tensor("mem", mem)
            mem = check_state(
                "mem", mem, "input_", input_, (input_.shape[1], self.out_features)
            )
        params = LeakyParams(
            self.beta, self.threshold, self.graded_spikes_factor, RESETS[self.reset_mechanism]
        )
        sg = self.spike_grad
        if isinstance(sg, LocalZO) and not self.surrogate_disable:
            spk, mems = linear_leaky(
                input_, self.linear.weight, self.linear.bias, mem, params, sg.spec, sg.meter,
                sparse=self.sparse,
            )
        else:
            spk, mems = linear_reference.linear_leaky(
                input_, self.linear.weight, self.linear.bias, mem, params,
                [self.spike_grad] * input_.shape[0],
            )
        if self.output:
            return spk, mems
        return mems

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"reset_mechanism={self.reset_mechanism!r}, sparse={self.sparse}"
        )

