"""OPZO: online pseudo-zeroth-order training of an snnTorch network.

Xiao, Meng, Zhang, He, Lin. *Online Pseudo-Zeroth-Order Training of
Neuromorphic Spiking Neural Networks*, arXiv:2407.12516 (ICLR 2026).

At every time step ``t`` the network runs forward once, with noise
``alpha * z_l`` added to the output of every hidden layer ``l`` (node
perturbation). The loss gradient at the readout is exact, ``e = dL/do``;
momentum feedback matrices ``M_l <- lam M_l + (1 - lam) mean_b(z_l o~^T) / alpha``
estimate the data-averaged transpose Jacobian of the output with respect to
layer ``l`` and carry ``e`` straight down, ``g_l = M_l e``. The weights get the
online three-factor update of OTTT, ``dW_l += (g_l * psi(u_l))^T a_hat_{l-1}``
with the presynaptic trace ``a_hat[t] = beta a_hat[t-1] + s[t]``. With the
noise in the input current (``perturb="membrane"``) ``M_l`` already estimates
the Jacobian with respect to the membrane, through the spike, so ``psi`` is
not applied again: ``dW_l += g_l^T a_hat_{l-1}``.

No autograd graph is built (the ``"backprop"`` baseline uses autograd on one
step at a time) and the state kept is a fixed set of tensors per layer, so
memory does not grow with the sequence length.
"""

from __future__ import annotations

import math
import warnings
from typing import Callable, List, NamedTuple, Optional, Tuple

import torch
import torch.nn as nn

from .._checks import (check_bool, check_choice, check_float_tensor, check_fraction,
                       check_nonnegative)
from ._feedback import NOISES, NoiseStream, momentum_update
from ._layers import Block, neuron_state, reset_neuron, walk
from ._local import local_derivative

__all__ = ["OPZO", "StepResult", "FEEDBACKS", "LOSSES"]

#: spatial credit assignment of the hidden layers
FEEDBACKS = ("momentum", "random", "zo", "backprop")
#: losses whose output gradient ``e = dL/do`` is used exactly
LOSSES = ("ce", "mse")
PERTURB = ("output", "membrane")
UPDATES = ("sequence", "step")


class StepResult(NamedTuple):
    """What :meth:`OPZO.train_step` returns: the loss (mean over steps and
    batch) and the accuracy of the time-averaged readout on the batch."""

    loss: float
    acc: float


class OPZO(nn.Module):
    """Trains an snnTorch network online with OPZO, or with a baseline that
    shares everything but the spatial credit assignment.

    Example::

        import snntorch as snn
        import torch, torch.nn as nn
        from snntorch_localzo import opzo

        net = nn.Sequential(
            nn.Linear(64, 256), snn.Leaky(beta=0.9, init_hidden=True),
            nn.Linear(256, 256), snn.Leaky(beta=0.9, init_hidden=True),
            nn.Linear(256, 10),                           # readout, no neuron
        )
        trainer = opzo.OPZO(net, torch.optim.Adam(net.parameters(), 1e-3))
        loss, acc = trainer.train_step(x_seq, y)          # x_seq: [T, B, 64], y: [B]
        logits = trainer.predict(x_seq)                   # noise-free, [B, 10]

    :param net: ``nn.Sequential`` of ``nn.Linear`` / ``nn.Conv2d`` layers (with
        ``nn.Flatten`` and ``nn.AvgPool2d`` where needed) each followed by an
        ``snn.Leaky`` or ``localzo.Leaky`` built with ``init_hidden=True``, and an
        ``nn.Linear`` readout last, applied at every time step. Anything else is
        an error naming the module.
    :param optimizer: steps the network's parameters after each sequence (or
        each step, ``update="step"``); None: :meth:`train_step` only fills
        ``.grad``.
    :param feedback: ``"momentum"`` (OPZO; ``momentum=0`` gives the
        single-step pseudo zeroth-order estimate ``M_l = mean_b(z_l o~^T) /
        alpha``), ``"random"`` (direct feedback alignment: fixed random
        ``M_l``), ``"zo"`` (zeroth order by node perturbation: each sample also
        runs noise-free, and a layer's error is ``(L(o~) - L(o)) z_l / alpha``
        from the scalar loss change alone; twice the forward work) or
        ``"backprop"`` (OTTT: the exact spatial gradient through the layers at
        each step, autograd on one step). Noise is injected only for
        ``"momentum"`` and ``"zo"``, which estimate from it.
    :param noise_std: ``alpha``, the noise scale. With ``"momentum"``, 0 freezes
        the feedback matrices (no noise, no estimate). Defaults to 0.1
    :param momentum: ``lam`` of the feedback matrices, in [0, 1). Defaults to 0.999
    :param dual_noise: ``+z`` then ``-z`` on alternate steps. Defaults to True
    :param local_grad: ``psi``: None for each neuron's own ``spike_grad``; an
        snnTorch surrogate (``surrogate.atan()``...) or a LocalZO object
        (``localzo.make()``: only neurons near threshold are updated, and its
        meter counts them when made with ``track=True``); or a sequence with
        one per hidden layer.
    :param loss: ``"ce"`` (softmax cross-entropy, ``e = softmax(o) - onehot``)
        or ``"mse"`` (``L = |o - onehot|^2 / 2``, ``e = o - onehot``), applied to
        the readout at every step. Defaults to ``"ce"``
    :param noise: ``"gaussian"``, ``"rademacher"`` or ``"sphere"``. Defaults to ``"gaussian"``
    :param perturb: ``"output"``: noise on the spikes a layer sends on (node
        perturbation); ``"membrane"``: noise in the neuron's input current, so
        on its membrane. Defaults to ``"output"``
    :param update: ``"sequence"``: one optimizer step per sequence, with the
        gradient of the loss averaged over steps; ``"step"``: one per time step.
        Defaults to ``"sequence"``
    :param generator: ``torch.Generator`` for the noise and the random
        feedback; None: torch's default generator
    """

    def __init__(
        self,
        net: nn.Module,
        optimizer: Optional[torch.optim.Optimizer] = None,
        *,
        feedback: str = "momentum",
        noise_std: float = 0.1,
        momentum: float = 0.999,
        dual_noise: bool = True,
        local_grad=None,
        loss: str = "ce",
        noise: str = "gaussian",
        perturb: str = "output",
        update: str = "sequence",
        generator: Optional[torch.Generator] = None,
    ):
        super().__init__()
        self.feedback = check_choice("feedback", feedback, FEEDBACKS)
        self.noise_std = check_nonnegative("noise_std", noise_std)
        self.momentum = check_fraction("momentum", momentum, low_open=False)
        self.dual_noise = check_bool("dual_noise", dual_noise)
        self.loss = check_choice("loss", loss, LOSSES)
        self.noise = check_choice("noise", noise, NOISES)
        self.perturb = check_choice("perturb", perturb, PERTURB)
        self.update = check_choice("update", update, UPDATES)
        if optimizer is not None and not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(
                f"`optimizer` must be a torch.optim.Optimizer or None, got {type(optimizer).__name__}"
            )
        if optimizer is None and update == "step":
            raise ValueError("update='step' needs an optimizer to step after every time step")
        if feedback == "zo" and self.noise_std == 0:
            raise ValueError("`noise_std` must be > 0 with feedback='zo': its signal is the noise's")
        if feedback == "momentum" and self.noise_std == 0:
            warnings.warn(
                "noise_std=0 freezes OPZO's feedback matrices (no noise, no estimate): the hidden "
                "layers learn only through the M they hold (zero unless loaded)", stacklevel=2,
            )
        # membrane noise: the estimate is already with respect to the membrane
        self._through_spike = perturb == "membrane" and feedback in ("momentum", "zo")
        if self._through_spike and local_grad is not None:
            warnings.warn(
                f"local_grad is not used with perturb='membrane' and feedback={feedback!r}: "
                "the noise in the input current already gives the derivative through the "
                "spike", stacklevel=2,
            )
        self.net = net
        self.optimizer = optimizer
        self.generator = generator
        self.blocks, self.readout = walk(net)
        self.local_grads = self._local_grads(local_grad)
        # graded spikes scale the spike function, so its derivative (None: 1)
        self._psi_scale = []
        for blk in self.blocks:
            factor = getattr(blk.neuron, "graded_spikes_factor", None)
            factor = None if factor is None else torch.as_tensor(factor).detach()
            self._psi_scale.append(None if factor is None or bool((factor == 1).all()) else factor)
        self.n_out = self.readout.weight.out_features
        for k, blk in enumerate(self.blocks):
            self.register_buffer(f"feedback_{k}", torch.zeros(0))
            n = self._known_width(blk)
            if n is not None and feedback in ("momentum", "random"):
                self._materialize(k, n)
        #: time steps whose noise has updated the feedback matrices
        self.register_buffer("feedback_steps", torch.zeros((), dtype=torch.long))
        self._streams = [NoiseStream(self.noise, self.dual_noise, generator) for _ in self.blocks]

    # ------------------------------------------------------------------ set-up
    def _local_grads(self, local_grad) -> List[Callable]:
        if local_grad is None:
            return [blk.neuron.spike_grad for blk in self.blocks]
        if isinstance(local_grad, (list, tuple)):
            if len(local_grad) != len(self.blocks):
                raise ValueError(
                    f"`local_grad` has {len(local_grad)} entries but the network has "
                    f"{len(self.blocks)} hidden layers"
                )
            grads = list(local_grad)
        else:
            grads = [local_grad] * len(self.blocks)
        for g in grads:
            if not callable(g):
                raise TypeError(
                    f"`local_grad` must be a spike gradient (an snnTorch surrogate or "
                    f"localzo.make()), got {type(g).__name__}"
                )
        return grads

    @staticmethod
    def _known_width(blk: Block) -> Optional[int]:
        """Neurons of a layer when its shape does not depend on the input."""
        if isinstance(blk.weight, nn.Linear) and not blk.post:
            return blk.weight.out_features
        return None

    def _materialize(self, k: int, n: int) -> torch.Tensor:
        name = f"feedback_{k}"
        M = getattr(self, name)
        if M.shape == (n, self.n_out):
            return M
        if M.numel():
            raise ValueError(
                f"hidden layer {k} ({self.blocks[k].neuron_name}) has {n} neurons for this "
                f"input but its feedback matrix has {M.shape[0]} rows: the input shape changed"
            )
        w = self.blocks[k].weight.weight
        if self.feedback == "random":
            M = torch.randn(n, self.n_out, device=w.device, dtype=w.dtype, generator=self.generator)
            M.div_(math.sqrt(self.n_out))
        else:
            M = torch.zeros(n, self.n_out, device=w.device, dtype=w.dtype)
        self._buffers[name] = M
        return M

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        # feedback matrices of conv layers are sized by the first input: take the saved size
        for k in range(len(self.blocks)):
            key = f"{prefix}feedback_{k}"
            mine = self._buffers.get(f"feedback_{k}")
            if key in state_dict and mine is not None and mine.numel() == 0:
                theirs = state_dict[key]
                self._buffers[f"feedback_{k}"] = torch.zeros(
                    theirs.shape, dtype=theirs.dtype, device=mine.device)
        # snnTorch 0.8 keeps a neuron's membrane as a persistent buffer shaped like its last
        # input; the trainer restarts it at every sequence, so take the saved shape
        for blk in self.blocks:
            key = f"{prefix}net.{blk.neuron_name}.mem"
            mem = blk.neuron._buffers.get("mem") if hasattr(blk.neuron, "_buffers") else None
            if key in state_dict and isinstance(mem, torch.Tensor) and \
                    mem.shape != state_dict[key].shape:
                blk.neuron._buffers["mem"] = torch.zeros(
                    state_dict[key].shape, dtype=mem.dtype, device=mem.device)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)

    # ------------------------------------------------------------------ checks
    def _check_inputs(self, x_seq, y=None):
        check_float_tensor("x_seq", x_seq)
        if x_seq.dim() < 2 or x_seq.shape[0] < 1 or x_seq.shape[1] < 1:
            raise ValueError(
                f"`x_seq` must have shape [T, batch, ...] with T >= 1 and batch >= 1, got "
                f"{tuple(x_seq.shape)}"
            )
        if y is None:
            return
        if not isinstance(y, torch.Tensor) or y.dtype.is_floating_point or y.dtype == torch.bool:
            raise TypeError("`y` must be an integer tensor of class indices, shape [batch]")
        if y.shape != (x_seq.shape[1],):
            raise ValueError(f"`y` must have shape ({x_seq.shape[1]},) (one label per sample), "
                             f"got {tuple(y.shape)}")
        if y.numel() and (int(y.min()) < 0 or int(y.max()) >= self.n_out):
            raise ValueError(f"`y` holds labels outside [0, {self.n_out - 1}] (the readout has "
                             f"{self.n_out} outputs)")

    # ------------------------------------------------------------------ one step
    def _start(self) -> None:
        for blk in self.blocks:
            reset_neuron(blk.neuron)
        for s in self._streams:
            s.restart()
        n = len(self.blocks)
        self._traces: List[Optional[torch.Tensor]] = [None] * (n + 1)
        self._bias_traces = [0.0] * (n + 1)
        self._post_shapes: List[list] = [[] for _ in range(n)]
        self._z: List[Optional[torch.Tensor]] = [None] * n
        self._spk: List[Optional[torch.Tensor]] = [None] * n
        self._mem: List[Optional[torch.Tensor]] = [None] * n
        self._clean: Optional[int] = None  # "zo": the first rows of the batch run noise-free

    def _trace(self, i: int, inp: torch.Tensor, beta: float) -> None:
        """``a_hat <- beta a_hat + inp`` (in place); the bias's trace likewise with input 1."""
        tr = self._traces[i]
        if tr is None or tr.shape != inp.shape:
            self._traces[i] = inp.detach().clone()
        else:
            tr.mul_(beta).add_(inp)
        self._bias_traces[i] = beta * self._bias_traces[i] + 1.0

    def _noise(self, k: int, like: torch.Tensor) -> torch.Tensor:
        """Layer ``k``'s directions of this step (zero on ``"zo"``'s noise-free copies)."""
        z = self._streams[k].next(like)
        if self._clean is not None:
            z[:self._clean].zero_()
        self._z[k] = z
        return z

    def _forward_step(self, x_t: torch.Tensor, noisy: bool, learn: bool) -> torch.Tensor:
        """One time step through the network; returns the readout ``o~``."""
        alpha = self.noise_std
        h = h_clean = x_t
        for k, blk in enumerate(self.blocks):
            inp = blk.apply_pre(h)
            inp_clean = blk.apply_pre(h_clean) if h_clean is not h else inp
            if learn:
                self._trace(k, inp_clean, blk.beta)
            cur = blk.apply_weight_post(inp, self._post_shapes[k])
            if noisy and self.perturb == "membrane":
                z = self._noise(k, cur)
                cur = cur + alpha * z
            out = blk.neuron(cur)
            spk = out[0] if isinstance(out, tuple) else out
            if learn:
                self._spk[k] = spk
                self._mem[k] = neuron_state(blk.neuron)
            h = h_clean = spk
            if noisy and self.perturb == "output":
                z = self._noise(k, spk)
                h = spk + alpha * z
        inp = self.readout.apply_pre(h)
        if learn:
            inp_clean = self.readout.apply_pre(h_clean) if h_clean is not h else inp
            self._trace(len(self.blocks), inp_clean, 0.0)
        return self.readout.weight(inp)

    def _loss_grad(self, o: torch.Tensor, y: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Per-sample loss ``[B]`` and its exact gradient ``e = dL/do`` ``[B, n_out]``."""
        o = o.float() if o.dtype in (torch.float16, torch.bfloat16) else o
        onehot = torch.zeros_like(o)
        onehot.scatter_(1, y.reshape(-1, 1), 1.0)
        if self.loss == "ce":
            logp = torch.log_softmax(o, dim=1)
            return -(logp * onehot).sum(1), logp.exp_().sub_(onehot)
        diff = o - onehot
        return 0.5 * diff.pow(2).sum(1), diff

    def _psi(self, k: int, rows=slice(None)) -> torch.Tensor:
        lif = self.blocks[k].neuron
        psi = local_derivative(self.local_grads[k], self._mem[k][rows] - lif.threshold)
        factor = self._psi_scale[k]
        return psi if factor is None else psi * factor.to(psi.device)

    def _hidden_update(self, k: int, g: torch.Tensor, grads, rows=slice(None)) -> None:
        """Layer ``k``'s three-factor update for the error ``g`` at its spikes (at
        its membrane with membrane noise, where the estimate already went through
        the spike: no ``psi`` then), on the batch ``rows``."""
        blk = self.blocks[k]
        like = self._spk[k][rows]
        g = g.reshape(like.shape).to(like.dtype)
        delta_u = g if self._through_spike else g * self._psi(k, rows)
        shapes = self._post_shapes[k]
        if rows != slice(None):
            shapes = [(like.shape[0],) + tuple(sh[1:]) for sh in shapes]
        delta_w = blk.post_adjoint(delta_u, shapes)
        blk.add_weight_grad(grads[k], self._traces[k][rows], delta_w, self._bias_traces[k])

    def _node_perturbation(self, loss_b: torch.Tensor, e: torch.Tensor, scale: float,
                           grads) -> None:
        """``"zo"``: rows ``[:B]`` ran noise-free, rows ``[B:]`` the same samples
        with noise; the update uses the noisy rows, each layer's error from the
        scalar loss change only, ``(L(o~) - L(o)) z_l / alpha``."""
        half = self._clean
        noisy = slice(half, None)
        n = len(self.blocks)
        self.readout.add_weight_grad(grads[n], self._traces[n][noisy], e[noisy], 1.0)
        change = (loss_b[noisy] - loss_b[:half]).mul_(scale / self.noise_std)
        for k in range(n):
            z = self._z[k][noisy]
            g = change.reshape((-1,) + (1,) * (z.dim() - 1)).to(z.dtype) * z
            self._hidden_update(k, g, grads, noisy)

    def _learn_step(self, o: torch.Tensor, e: torch.Tensor, grads) -> None:
        """Adds this step's three-factor updates to ``grads`` (``e`` already scaled;
        ``"zo"`` goes to :meth:`_node_perturbation` instead)."""
        n = len(self.blocks)
        ro = self.readout
        ro.add_weight_grad(grads[n], self._traces[n], e, 1.0)
        if n == 0:
            return
        fb = self.feedback
        if fb == "backprop":
            g = self._vjp(ro, self._spk[n - 1], e, post=False)
            for k in range(n - 1, -1, -1):
                blk = self.blocks[k]
                delta_u = g * self._psi(k)
                delta_w = blk.post_adjoint(delta_u, self._post_shapes[k])
                blk.add_weight_grad(grads[k], self._traces[k], delta_w, self._bias_traces[k])
                if k > 0:
                    g = self._vjp(blk, self._spk[k - 1], delta_u, post=True)
            return
        noisy = fb == "momentum" and self.noise_std > 0
        for k in range(n):
            M = getattr(self, f"feedback_{k}")
            if M.numel() == 0:
                M = self._materialize(k, self._spk[k][0].numel())
            if noisy:
                momentum_update(M, self._z[k], o, self.noise_std, self.momentum)
            self._hidden_update(k, e.to(M.dtype) @ M.t(), grads)
        if noisy:
            self.feedback_steps.add_(1)

    @staticmethod
    def _vjp(blk: Block, x_like: torch.Tensor, grad_out: torch.Tensor, post: bool) -> torch.Tensor:
        """``(d out / d x)^T grad_out`` through one block's synaptic ops (autograd on
        this block and step only; the ops are linear, so the point does not matter)."""
        with torch.enable_grad():
            x = x_like.detach().requires_grad_(True)
            y = blk.weight(blk.apply_pre(x))
            if post:
                for op in blk.post:
                    y = op(y)
            (g,) = torch.autograd.grad(y, x, grad_out)
        return g

    # ------------------------------------------------------------------ public
    def _params(self) -> List[Tuple[nn.Parameter, Optional[nn.Parameter]]]:
        return [(b.weight.weight, b.weight.bias) for b in self.blocks + [self.readout]]

    def _zero_grads(self, grads=None):
        if grads is None:
            return [(torch.zeros_like(w), None if b is None else torch.zeros_like(b))
                    for w, b in self._params()]
        for gw, gb in grads:
            gw.zero_()
            if gb is not None:
                gb.zero_()
        return grads

    def _publish(self, grads) -> None:
        """Hands the accumulated gradients to the parameters' ``.grad``."""
        for (w, b), (gw, gb) in zip(self._params(), grads):
            for p, g in ((w, gw), (b, gb)):
                if p is not None and p.requires_grad:
                    p.grad = g.clone() if self.update == "step" else g

    def train_step(self, x_seq: torch.Tensor, y: torch.Tensor) -> StepResult:
        """Trains on one batch of sequences, online: one forward pass per time
        step, with the updates accumulated (or applied, ``update="step"``) as
        the sequence goes. The neurons start from rest.

        :param x_seq: input ``[T, batch, ...]`` (time first, as snnTorch)
        :param y: class labels ``[batch]``
        :return: :class:`StepResult` ``(loss, acc)``
        """
        self._check_inputs(x_seq, y)
        steps, batch = x_seq.shape[0], x_seq.shape[1]
        noisy = self.feedback in ("momentum", "zo") and self.noise_std > 0
        per_step = self.update == "step"
        scale = 1.0 / batch if per_step else 1.0 / (batch * steps)
        node = self.feedback == "zo"
        if node:  # each sample twice: noise-free rows first, then noisy rows
            x_seq, y_all = torch.cat([x_seq, x_seq], 1), torch.cat([y, y])
        else:
            y_all = y
        with torch.no_grad():
            self._start()
            if node:
                self._clean = batch
            grads = self._zero_grads()
            loss_sum = torch.zeros((), device=x_seq.device)
            out_sum = None
            for t in range(steps):
                o = self._forward_step(x_seq[t], noisy, learn=True)
                loss_b, e = self._loss_grad(o, y_all)
                loss_sum += loss_b[:batch].mean()
                seen = o[:batch].float()
                out_sum = seen if out_sum is None else out_sum.add_(seen)
                if node:
                    self._node_perturbation(loss_b, e.mul_(scale), scale, grads)
                else:
                    self._learn_step(o, e.mul_(scale), grads)
                if per_step:
                    self._publish(grads)
                    self.optimizer.step()
                    self._zero_grads(grads)
            if not per_step:
                self._publish(grads)
                if self.optimizer is not None:
                    self.optimizer.step()
            acc = (out_sum.argmax(1) == y).float().mean()
            self._release()
        return StepResult(loss=float(loss_sum) / steps, acc=float(acc))

    def _release(self) -> None:
        """Drops the per-step references (the neurons keep their state)."""
        n = len(self.blocks)
        self._z = [None] * n
        self._spk = [None] * n
        self._mem = [None] * n
        self._clean = None

    @torch.no_grad()
    def predict(self, x_seq: torch.Tensor) -> torch.Tensor:
        """The readout averaged over time, ``[batch, n_out]``, without noise or
        learning (neurons start from rest); its argmax is the predicted class."""
        self._check_inputs(x_seq)
        self._start()
        total = None
        for t in range(x_seq.shape[0]):
            o = self._forward_step(x_seq[t], noisy=False, learn=False)
            total = o.float() if total is None else total.add_(o)
        self._release()
        return total / x_seq.shape[0]

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        """Same as :meth:`predict`."""
        return self.predict(x_seq)

    @torch.no_grad()
    def evaluate(self, x_seq: torch.Tensor, y: torch.Tensor, batch_size: int = 256) -> float:
        """Accuracy of :meth:`predict` on ``(x_seq, y)``, in batches along dimension 1."""
        self._check_inputs(x_seq, y)
        correct = 0
        for first in range(0, x_seq.shape[1], batch_size):
            pred = self.predict(x_seq[:, first:first + batch_size]).argmax(1)
            correct += int((pred == y[first:first + batch_size]).sum())
        return correct / x_seq.shape[1]

    def feedback_matrices(self) -> List[torch.Tensor]:
        """``M_l`` of each hidden layer, ``[n_l, n_out]`` (empty until sized by a
        first input for conv layers; unused by ``"zo"`` and ``"backprop"``)."""
        return [getattr(self, f"feedback_{k}") for k in range(len(self.blocks))]

    def extra_repr(self) -> str:
        return (f"feedback={self.feedback!r}, noise_std={self.noise_std:g}, momentum="
                f"{self.momentum:g}, dual_noise={self.dual_noise}, noise={self.noise!r}, "
                f"perturb={self.perturb!r}, loss={self.loss!r}, update={self.update!r}")
