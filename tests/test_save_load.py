"""Save and load: state_dicts move between localzo.Leaky and snn.Leaky,
whole models survive torch.save/torch.load, NIR sees a Leaky."""

import importlib
import io

import pytest
import torch
import torch.nn as nn
import snntorch as snn
from snntorch import surrogate, utils

import snntorch_localzo as localzo
from conftest import MODES
from snntorch_localzo import use_backend
from snntorch_localzo.neurons.leaky import MODERN_SNNTORCH

BACKENDS = MODES


def _net(leaky, spike_grad):
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(6, 10),
        leaky(beta=0.9, init_hidden=True, spike_grad=spike_grad),
        nn.Linear(10, 3),
        leaky(beta=0.8, init_hidden=True, output=True, spike_grad=spike_grad),
    )


def _run(net, x):
    utils.reset(net)
    return torch.stack([net(x[t])[1] for t in range(x.shape[0])])


@pytest.mark.parametrize("backend", BACKENDS)
def test_trained_localzo_model_runs_with_plain_snntorch_neurons(backend):
    """Train with LocalZO, then load the state_dict into the same network
    built from snn.Leaky with snnTorch's ATan: inference is identical."""
    trained = _net(localzo.Leaky, localzo.make("normal", delta=0.3))
    opt = torch.optim.SGD(trained.parameters(), lr=0.1)
    x = torch.rand(6, 4, 6) * 2
    with use_backend(backend):
        for _ in range(3):
            opt.zero_grad()
            _run(trained, x).pow(2).mean().backward()
            opt.step()
    plain = _net(snn.Leaky, surrogate.atan())
    back = _net(localzo.Leaky, None)  # and the other way round
    with torch.no_grad():
        # snnTorch 0.8 keeps `mem` as a persistent buffer shaped like the last
        # input, for snn.Leaky too: a state_dict loads into a model run alike
        _run(plain, x), _run(back, x)
    plain.load_state_dict(trained.state_dict())
    with torch.no_grad(), use_backend(backend):
        assert torch.equal(_run(plain, x), _run(trained, x))
    back.load_state_dict(plain.state_dict())
    with torch.no_grad():
        assert torch.equal(_run(back, x), _run(plain, x))


def test_whole_model_save_and_load_with_both_layers():
    torch.manual_seed(0)
    model = nn.ModuleDict({
        "lif": localzo.Leaky(beta=0.9, spike_grad=localzo.make("sigmoid", slope=10, track=True)),
        "seq": localzo.LinearLeaky(0.9, 4, 3, reset_mechanism="zero"),
    })
    buf = io.BytesIO()
    torch.save(model, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=False)
    assert loaded["lif"].spike_grad == model["lif"].spike_grad and loaded["lif"].spike_grad.track
    x = torch.rand(5, 2, 4)
    assert torch.equal(loaded["seq"](x)[0], model["seq"](x)[0])
    sd = loaded.state_dict()
    assert set(sd) == set(model.state_dict())
    assert torch.equal(sd["seq.linear.weight"], model["seq"].linear.weight)


# ----------------------------------------------------------------- NIR
def _nir_extractor():
    for name in ("snntorch.export_nir", "snntorch.export"):
        try:
            module = importlib.import_module(name)
        except Exception:
            continue
        if hasattr(module, "_extract_snntorch_module"):
            return module._extract_snntorch_module
    return None


def test_nir_export_sees_a_leaky():
    extract = _nir_extractor()
    if extract is None:
        pytest.skip(f"snnTorch {snn.__version__} has no NIR export (or nir is not installed)")
    import numpy as np

    ours = extract(localzo.Leaky(beta=0.8, threshold=0.7))
    theirs = extract(snn.Leaky(beta=0.8, threshold=0.7))
    assert ours is not None and type(ours) is type(theirs)
    np.testing.assert_equal(vars(ours), vars(theirs))


