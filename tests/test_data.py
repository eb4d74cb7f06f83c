"""demo.data.spiking_digits: spikes re-drawn at every presentation (snnTorch's
convention) or drawn once, and a validation split carved from the training part."""

import pytest
import torch

pytest.importorskip("sklearn")

from snntorch_localzo.demo.data import spiking_digits  # noqa: E402


def test_training_spikes_are_redrawn_at_every_presentation():
    data = spiking_digits(num_steps=4, seed=0)
    idx = torch.arange(50)
    torch.manual_seed(1)
    a = data.train_batch(idx)
    b = data.train_batch(idx)
    torch.manual_seed(1)
    again = data.train_batch(idx)
    assert a.shape == data.x_train[:, idx].shape == (4, 50, 64)
    assert not torch.equal(a, b) and torch.equal(a, again)
    # both draws follow the pixel intensities
    rates = data.train_rates[idx]
    assert abs(float(a.mean() - rates.mean())) < 0.02


def test_fixed_encoding_keeps_one_draw():
    data = spiking_digits(num_steps=4, seed=0, redraw=False)
    idx = torch.tensor([3, 1, 4])
    assert data.train_rates is None
    assert torch.equal(data.train_batch(idx), data.x_train[:, idx])
    assert torch.equal(data.train_batch(idx), data.train_batch(idx))
    # the callers' fields are what they were
    old = spiking_digits(num_steps=4, seed=0)
    assert torch.equal(old.x_train, data.x_train) and torch.equal(old.x_test, data.x_test)


def test_validation_split_is_carved_from_the_training_part():
    full = spiking_digits(num_steps=2, seed=0)
    split = spiking_digits(num_steps=2, seed=0, val_size=0.2)
    assert full.x_val is None and full.y_val is None
    n_train, n_val = split.x_train.shape[1], split.x_val.shape[1]
    assert n_train + n_val == full.x_train.shape[1]
    assert n_val == pytest.approx(0.2 * (n_train + n_val), abs=1)
    assert torch.equal(split.y_test, full.y_test)  # the test split does not move
    assert split.train_rates.shape == (n_train, 64) and split.y_val.shape == (n_val,)
    assert set(split.y_val.tolist()) == set(range(10))  # stratified


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(val_size=1.0), ValueError, "`val_size`"),
    (dict(val_size=-0.1), ValueError, "`val_size`"),
    (dict(redraw="yes"), TypeError, "`redraw`"),
])
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        spiking_digits(num_steps=2, **kwargs)
