"""FTBC, forward temporal bias correction (Wu, Bojkovic, Gu, Suo, Zou, ECCV
2024, arXiv:2403.18388): per-step, per-channel biases of a converted network
found in the forward pass only, so that every spiking layer fires on average
what the ANN's QCFS activation outputs, at every time step."""

from __future__ import annotations

from typing import Iterable, List, Optional, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from .._checks import check_choice, check_count, check_fraction
from .._progress import progress_bar
from .convert import BATCHNORM, DROPPED, ann_layers
from .network import ConvertedSNN, IFNeuron
from .qcfs import QCFS

__all__ = ["calibrate", "conversion_error"]

Data = Union[torch.Tensor, Iterable]


# --------------------------------------------------------------------------- inputs
def _check_snn(snn_net) -> ConvertedSNN:
    if not isinstance(snn_net, ConvertedSNN):
        raise TypeError(
            "`snn` must be a ConvertedSNN (made by conversion.convert), got "
            f"{type(snn_net).__name__}"
        )
    return snn_net


def _check_pair(snn_net: ConvertedSNN, ann: nn.Module) -> None:
    qcfs = sum(isinstance(m, QCFS) for _, m in ann_layers(ann))
    neurons = len(snn_net.neurons)
    if qcfs != neurons:
        raise ValueError(
            f"`ann` has {qcfs} QCFS activations but `snn` has {neurons} spiking layers: "
            "`snn` must be conversion.convert(ann)"
        )


def _batches(data: Data, num_batches: Optional[int]):
    """The input tensors of ``data``: one tensor, or an iterable of tensors or
    of ``(x, y, ...)`` tuples (a DataLoader); at most ``num_batches``."""
    items = [data] if isinstance(data, torch.Tensor) else data
    if not isinstance(items, Iterable):
        raise TypeError(
            "`data` must be a tensor or an iterable of tensors / (x, y) batches (a DataLoader), "
            f"got {type(data).__name__}"
        )
    count = 0
    for item in items:
        if num_batches is not None and count >= num_batches:
            break
        x = item[0] if isinstance(item, (tuple, list)) else item
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            raise TypeError(
                "every batch of `data` must be a floating-point tensor or an (x, y) pair with "
                f"one, got {x.dtype if isinstance(x, torch.Tensor) else type(x).__name__}"
            )
        count += 1
        yield x
    if count == 0:
        raise ValueError("`data` holds no batch")


def _device(module: nn.Module) -> torch.device:
    for t in list(module.parameters()) + list(module.buffers()):
        return t.device
    return torch.device("cpu")


# --------------------------------------------------------------------------- forward passes
def _ann_activations(ann: nn.Module, x: torch.Tensor) -> List[torch.Tensor]:
    """Outputs of the ANN's QCFS activations, in order, in inference mode:
    BatchNorm at its running statistics, Dropout left out. Nothing of the ANN
    is changed (not even its train / eval flags)."""
    acts = []
    h = x
    for name, m in ann_layers(ann):
        if isinstance(m, BATCHNORM):
            if m.running_mean is None:
                raise ValueError(f"BatchNorm '{name}' has no running statistics")
            h = F.batch_norm(h, m.running_mean, m.running_var, m.weight, m.bias, False, 0.0, m.eps)
        elif isinstance(m, DROPPED):
            continue
        else:
            h = m(h)
        if isinstance(m, QCFS):
            acts.append(h)
    return acts


def _segments(snn_net: ConvertedSNN):
    """``[(modules before neuron k, neuron k)]`` for every spiking layer."""
    out, pending = [], []
    for layer in snn_net.layers:
        if isinstance(layer, IFNeuron):
            out.append((pending, layer))
            pending = []
        else:
            pending.append(layer)
    return out


def _apply(modules, inputs: List[torch.Tensor]) -> List[torch.Tensor]:
    """Each step's input through ``modules``; a step whose input is the same
    tensor as the step before reuses its result (the analog input)."""
    out = []
    for t, h in enumerate(inputs):
        if t and h is inputs[t - 1]:
            out.append(out[-1])
            continue
        for m in modules:
            h = m(h)
        out.append(h)
    return out


def _fire(neuron: IFNeuron, currents: List[torch.Tensor]) -> List[torch.Tensor]:
    """The layer's spikes at every step with its present biases (inference)."""
    mem, spikes = None, []
    for t, cur in enumerate(currents):
        spk, mem = neuron(cur, t, mem)
        spikes.append(spk)
    return spikes


def _channel_dims(x: torch.Tensor) -> List[int]:
    return [0] + list(range(2, x.dim()))


FORMS = ("root_finding", "released")


def _calibrate_layer(neuron: IFNeuron, currents, target, alpha: float, iters: int,
                     form: str) -> List[torch.Tensor]:
    """Updates ``neuron.bias`` step by step on one batch; returns its spikes."""
    dims = _channel_dims(currents[0])
    if form == "released":  # the authors' script: the error without the layer's own bias
        mem = None
        for t, cur in enumerate(currents):
            if mem is None:
                mem = neuron.initial_mem(cur)
            spk, m = neuron.neuron(cur, mem)
            err = spk - target
            neuron.bias[t] -= alpha * err.mean(dims)
            # the state goes on corrected sample by sample; snnTorch resets the next step by
            # the spike of this corrected membrane, as the script re-fires it
            mem = m - err
        return _fire(neuron, currents)
    goal = target.mean(dims)
    mem, spikes = None, []
    for t, cur in enumerate(currents):
        for _ in range(iters):  # root finding: re-fire step t with the new bias
            spk, _ = neuron(cur, t, mem)
            neuron.bias[t] -= alpha * (spk.mean(dims) - goal)
        spk, mem = neuron(cur, t, mem)
        spikes.append(spk)
    return spikes


# --------------------------------------------------------------------------- public
@torch.no_grad()
def conversion_error(
    snn: ConvertedSNN,
    ann: nn.Module,
    data: Data,
    num_steps: int,
    num_batches: Optional[int] = None,
) -> torch.Tensor:
    """
    The expected conversion error of every spiking layer at every step, as
    FTBC measures it: for layer ``l`` and step ``t``, the mean over channels
    of ``|mean s_l[t] - mean a_l|``, where the means run over all samples
    of ``data`` and spatial positions, ``s_l[t]`` is the layer's output at
    step ``t`` (``lam`` per spike) and ``a_l`` the output of the ANN's QCFS
    activation it replaces. In the units of the activations. Neither
    network is changed.

    Example::

        err_plain = conversion.conversion_error(snn_net, ann, x_train, num_steps=8)

    :param snn: the converted network
    :type snn: ConvertedSNN
    :param ann: the network it was converted from
    :type ann: torch.nn.Sequential
    :param data: one input tensor, or an iterable of tensors or ``(x, y)``
        batches (a DataLoader)
    :type data: torch.Tensor or iterable
    :param num_steps: time steps (at most the calibrated ones)
    :type num_steps: int
    :param num_batches: use at most this many batches of ``data``. Defaults
        to all
    :type num_batches: int, optional
    :return: ``[layers, num_steps]`` (float64, CPU)
    :rtype: torch.Tensor
    """
    snn_net = _check_snn(snn)
    _check_pair(snn_net, ann)
    check_count("num_steps", num_steps)
    check_count("num_batches", num_batches, allow_none=True)
    if snn_net.calibrated_steps and num_steps > snn_net.calibrated_steps:
        raise ValueError(
            f"`num_steps`={num_steps} but the network was calibrated for "
            f"{snn_net.calibrated_steps} steps"
        )
    dev_snn, dev_ann = _device(snn_net), _device(ann)
    segments = _segments(snn_net)
    spike_sums = [None] * len(segments)
    act_sums = [None] * len(segments)
    count = 0
    for x in _batches(data, num_batches):
        acts = _ann_activations(ann, x.to(dev_ann))
        inputs = [x.to(dev_snn)] * num_steps
        for k, (pre, neuron) in enumerate(segments):
            inputs = _fire(neuron, _apply(pre, inputs))
            dims = _channel_dims(inputs[0])
            s = torch.stack([spk.double().mean(dims) for spk in inputs])  # [T, C]
            a = acts[k].to(dev_snn).double().mean(dims)
            n = x.shape[0]
            spike_sums[k] = s * n if spike_sums[k] is None else spike_sums[k] + s * n
            act_sums[k] = a * n if act_sums[k] is None else act_sums[k] + a * n
        count += x.shape[0]
    for n in snn_net.neurons:
        n.release_state()
    rows = [(s / count - a / count).abs().mean(1) for s, a in zip(spike_sums, act_sums)]
    return torch.stack(rows).cpu()


@torch.no_grad()
def calibrate(
    snn: ConvertedSNN,
    ann: nn.Module,
    data: Data,
    num_steps: int,
    *,
    alpha: float = 0.5,
    iters: int = 5,
    num_batches: Optional[int] = 3,
    form: str = "root_finding",
    progress: bool = False,
) -> torch.Tensor:
    """
    FTBC calibration of a converted network, in the forward pass only. For
    each batch of ``data``, each spiking layer in order and each step ``t``
    in order, with the biases of earlier layers and steps in place, the
    layer's bias at step ``t`` moves against the error of its mean output
    (per channel: mean over the batch and spatial positions):

    .. math::

            b_l[t] \\leftarrow b_l[t] - \\alpha \\left(\\overline{s_l[t]} - \\overline{a_l}\\right)

    and step ``t`` is fired again with the new bias, ``iters`` times, before
    going on (the root-finding form; ``b`` is *added* to the input current).
    The ANN's activations ``a_l`` are computed on the same batch. The
    biases replace any earlier calibration; they are buffers (in
    ``state_dict``), and the network then runs for any ``T' <= num_steps``
    with the first ``T'`` of them (calibrating for ``T`` and truncating to
    ``T'`` gives exactly the biases of calibrating for ``T'``).

    ``form="released"`` is what the authors' released script does
    (``main_cali.py``: ``bias_corr_model`` calling ``bias_corr_step_by_step``
    for every spiking layer of every batch): the error at step ``t`` is
    measured *without* the layer's own bias, the bias grows by ``alpha``
    times its mean once per batch (so it accumulates over batches: about
    ``num_batches * alpha`` times the error; ``iters`` does not apply), and
    the membrane carried to the next step is corrected sample by sample by
    the error. The script's own call is ``alpha=0.4, num_batches=3``. A
    later edit in a fork of that repository creates the module iterators
    once before the batch loop, so that only the first batch calibrates:
    that is ``form="released", alpha=0.4, num_batches=1``.

    Only ``snn`` is changed; ``ann`` is read (inference mode: BatchNorm at
    its running statistics, Dropout left out) and left as it was.

    Example::

        from snntorch_localzo import conversion

        snn_net = conversion.convert(ann)
        residual = conversion.calibrate(snn_net, ann, x_train, num_steps=8)  # [layers, 8]
        logits = snn_net(x_test, num_steps=8)   # or any num_steps <= 8

    :param snn: the network to calibrate (changed in place)
    :type snn: ConvertedSNN
    :param ann: the network it was converted from
    :type ann: torch.nn.Sequential
    :param data: calibration inputs (training data, never the test set): one
        tensor, or an iterable of tensors or ``(x, y)`` batches (a DataLoader)
    :type data: torch.Tensor or iterable
    :param num_steps: time steps to calibrate, ``T``
    :type num_steps: int
    :param alpha: step size, in (0, 1]. Defaults to 0.5
    :type alpha: float, optional
    :param iters: updates (re-firings) per layer and step, per batch.
        Defaults to 5
    :type iters: int, optional
    :param num_batches: use at most this many batches of ``data``; None: all.
        Defaults to 3
    :type num_batches: int, optional
    :param form: ``"root_finding"`` (this project's form: the layer's own
        bias fed back, ``iters`` re-firings per step) or ``"released"`` (the
        authors' released script, see above). Defaults to ``"root_finding"``
    :type form: str, optional
    :param progress: show a progress bar on stderr (needs tqdm). Defaults to False
    :type progress: bool, optional
    :return: the residual error after calibration on the calibration
        batches, ``[layers, num_steps]``: see :func:`conversion_error`. It
        is in-sample (what the calibration minimises); measure it on
        held-out data with :func:`conversion_error` to judge the calibration
    :rtype: torch.Tensor
    """
    snn_net = _check_snn(snn)
    _check_pair(snn_net, ann)
    check_count("num_steps", num_steps)
    alpha = check_fraction("alpha", alpha, high_open=False)
    check_count("iters", iters)
    check_count("num_batches", num_batches, allow_none=True)
    check_choice("form", form, FORMS)
    dev_snn, dev_ann = _device(snn_net), _device(ann)
    segments = _segments(snn_net)
    saved = [n.bias for n in snn_net.neurons]
    bar = _progress_bar(progress, num_batches, len(segments))
    try:
        for n in snn_net.neurons:
            n.bias = torch.zeros(0, device=n.bias.device, dtype=n.bias.dtype)
        used = []
        for x in _batches(data, num_batches):
            used.append(x)
            acts = _ann_activations(ann, x.to(dev_ann))
            inputs = [x.to(dev_snn)] * num_steps
            for k, (pre, neuron) in enumerate(segments):
                currents = _apply(pre, inputs)
                if not neuron.steps:
                    neuron.bias = currents[0].new_zeros(num_steps, currents[0].shape[1])
                target = acts[k].to(device=dev_snn, dtype=currents[0].dtype)
                inputs = _calibrate_layer(neuron, currents, target, alpha, iters, form)
                if bar is not None:
                    bar.update(1)
    except BaseException:
        for n, b in zip(snn_net.neurons, saved):
            n.bias = b
        raise
    finally:
        if bar is not None:
            bar.close()
        for n in snn_net.neurons:
            n.release_state()
    return conversion_error(snn_net, ann, used, num_steps)


def _progress_bar(enabled: bool, num_batches: Optional[int], layers: int):
    total = num_batches * layers if num_batches is not None else None
    return progress_bar(total, enabled, desc="FTBC calibration", unit="layer")
