"""The tutorials run offline on the CPU in their fast mode, do what their text
says, and their notebooks are the jupytext conversion of their sources.

Each tutorial is executed in this process with ``SNNTORCH_LOCALZO_TUTORIAL_FAST=1``
and its figures sent to a temporary folder; the assertions read the variables
it leaves behind. Tests marked ``tutorial`` need the ``tutorials`` extra
(tonic, jupytext); tox runs them in the snntorch100 environment only.
"""

import math
import runpy
from pathlib import Path

import numpy as np
import pytest
import torch

TUTORIALS = Path(__file__).resolve().parent.parent / "tutorials"
SOURCES = sorted(TUTORIALS.glob("[0-9][0-9]_*.py"))
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def run_tutorial(tmp_path, monkeypatch):
    """Runs ``tutorials/<name>`` in fast mode; returns its globals and figure folder."""
    figures = tmp_path / "figures"
    monkeypatch.setenv("SNNTORCH_LOCALZO_TUTORIAL_FAST", "1")
    monkeypatch.setenv("SNNTORCH_LOCALZO_FIGURES", str(figures))
    monkeypatch.setenv("SNNTORCH_LOCALZO_DATA", str(tmp_path / "data"))
    monkeypatch.delenv("SNNTORCH_LOCALZO_DOWNLOAD", raising=False)
    monkeypatch.chdir(tmp_path)

    def run(name):
        return runpy.run_path(str(TUTORIALS / name), run_name="__main__"), figures

    return run


def assert_pngs(figures, names):
    for name in names:
        path = figures / name
        assert path.is_file(), f"{name} was not written"
        data = path.read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 2000, name


def assert_learns(history):
    assert history["loss"][-1] < history["loss"][0], history["loss"]
    assert history["test_acc"][-1] > 0.2, history["test_acc"]  # chance is 0.1


@pytest.mark.tutorial
def test_tutorial_01_quickstart(run_tutorial):
    g, figures = run_tutorial("01_quickstart.py")
    assert g["same_forward"] and g["same_forward_fused"]
    for name in ("history_atan", "history_localzo", "history_sparse", "history_fused"):
        assert_learns(g[name])
    for name in ("history_localzo", "history_sparse", "history_fused"):
        assert all(0.0 < a < 0.5 for a in g[name]["active"]), g[name]["active"]
    # a smaller delta gives a sparser backward
    assert g["history_sparse"]["active"][-1] < g["history_localzo"]["active"][-1]
    assert g["history_atan"]["active"] == []  # no meter on the surrogate
    # on the CPU a step of this small net takes the reference path, as snn.Leaky with
    # make() does: the same draws, the same run; the GPU kernels draw their own
    if str(g["device"]) == "cpu":
        assert g["history_fused"] == g["history_sparse"]
    else:
        assert g["history_fused"] != g["history_sparse"]
    ratio = g["history_fused"]["active"][-1] / g["history_sparse"]["active"][-1]
    assert 0.5 < ratio < 2.0, ratio
    assert_pngs(figures, ["01_training.png"])


@pytest.mark.tutorial
def test_tutorial_02_theory(run_tutorial):
    g, figures = run_tutorial("02_theory.py")
    assert set(g["worst_dist"]) == {"normal", "uniform", "laplace"}
    assert set(g["worst_twin"]) == {"atan", "sigmoid", "fast_sigmoid"}
    # Monte-Carlo means within 5 standard errors (+1% of the peak) of the closed forms,
    # and of snnTorch's own surrogates for the twins
    assert max(g["worst_dist"].values()) < 1.0, g["worst_dist"]
    assert max(g["worst_twin"].values()) < 1.0, g["worst_twin"]
    assert max(g["closed_form_gap"].values()) < 1e-3, g["closed_form_gap"]
    # one backward is sparse
    one = g["one_draw"]
    assert 0 < int((one != 0).sum()) < len(one) // 2
    # measured active fractions: within 5 binomial standard errors of 1 - F(|u|/delta)^m,
    # increasing with delta and with the number of samples
    n = g["n_neurons"]
    for m, rows in g["active"].items():
        for _, measured, predicted, _ in rows:
            assert abs(measured - predicted) <= 5 * math.sqrt(predicted * (1 - predicted) / n) + 1e-4
        assert [r[1] for r in rows] == sorted(r[1] for r in rows)
    assert all(a[1] < b[1] for a, b in zip(g["active"][1], g["active"][5]))
    assert_pngs(figures, ["02_single_draw.png", "02_expected_vs_estimated.png", "02_twins.png",
                          "02_active_fraction.png"])


@pytest.mark.tutorial
def test_tutorial_03_neuromorphic_tonic(run_tutorial):
    pytest.importorskip("tonic")
    g, figures = run_tutorial("03_neuromorphic_tonic.py")
    assert not g["USE_REAL"]  # nothing on disk, nothing downloaded
    assert g["events"].dtype.names == ("x", "y", "t", "p")
    assert g["frames"].shape[1:] == (g["num_steps"], 2, 34, 34)
    assert_learns(g["history"])
    assert all(0.0 < a < 0.5 for a in g["history"]["active"]), g["history"]["active"]
    assert_pngs(figures, ["03_frames.png", "03_training.png"])


@pytest.mark.tutorial
def test_tutorial_04_speed_and_memory(run_tutorial):
    g, figures = run_tutorial("04_speed_and_memory.py")
    assert g["same_forward"]
    results = g["results"]
    assert list(results) == g["names"]
    assert results["snn.Leaky loop, ATan"]["active"] == 1.0
    for name in g["names"][1:]:
        # untrained, silent hidden layers (make()'s wider band while silent) and the 20
        # outputs, which make() gives the expected value (every entry): well below ATan's
        assert 0.0 <= results[name]["active"] < 0.7, (name, results[name])
    assert_pngs(figures, ["04_speed_memory.png"])


@pytest.mark.tutorial
def test_tutorial_05_opzo(run_tutorial):
    threads = torch.get_num_threads()
    try:
        g, figures = run_tutorial("05_opzo.py")
    finally:
        torch.set_num_threads(threads)  # the tutorial sets one thread
    assert g["same_forward"]
    # the feedback estimate converges, faster with dual noise
    assert g["cos_dual"][-1][1] > 0.99
    assert g["cos_dual"][-1][1] > g["cos_single"][-1][1]
    histories = g["histories"]
    assert set(histories) == {"momentum", "backprop", "random", "zo"}
    for name in ("momentum", "backprop"):
        h = histories[name]
        assert h["loss"][-1] < h["loss"][0], (name, h["loss"])
        assert h["test_acc"][-1] > 0.3, (name, h["test_acc"])  # chance is 0.1
    # LocalZO's psi: sparse updates
    assert 0.0 < g["active"] < 0.5
    assert g["history_localzo"]["test_acc"][-1] > 0.1
    # memory: OPZO's peak does not grow with T, backpropagation through time's does
    peak = g["peak"]
    assert peak[("OPZO", 64)] <= 1.2 * peak[("OPZO", 8)] + 0.05
    assert peak[("BPTT", 64)] > 2 * peak[("BPTT", 8)]
    assert {k for k in g["state"] if k.startswith("feedback")} == {
        "feedback_0", "feedback_1", "feedback_steps"}
    assert_pngs(figures, ["05_feedback_estimate.png", "05_training.png"])


@pytest.mark.tutorial
def test_tutorial_06_conversion(run_tutorial):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # many tiny operations: no waiting on threads on a loaded CPU
    try:
        g, figures = run_tutorial("06_conversion.py")
    finally:
        torch.set_num_threads(threads)

    assert g["ann_acc"] > 0.8  # the QCFS ANN learned (chance is 0.1)
    assert g["same_as_qcfs"]  # T = L: the first spiking layer fires the QCFS activation
    # FTBC cuts the per-step error of every layer, on the calibration data
    err_plain, err_ftbc = g["err_plain"], g["err_ftbc"]
    assert err_plain.shape == err_ftbc.shape == (3, g["T_MAX"])
    assert err_ftbc.mean() < 0.3 * err_plain.mean()
    # and helps where plain conversion is weak, without hurting the largest T
    acc_plain, acc_ftbc = g["acc_plain"], g["acc_ftbc"]
    assert acc_ftbc[2] > acc_plain[2] + 0.2
    assert acc_ftbc[g["T_MAX"]] >= acc_plain[g["T_MAX"]] - 0.02
    assert g["prefix_equal"] and g["restored_equal"]
    # LocalZO fine-tuning at T=2 trains (sparse backward) and does not lose accuracy
    hist = g["tune_history"]
    assert all(0.0 < a < 0.5 for a in hist["active"]), hist["active"]
    assert hist["test_acc"][-1] >= g["acc_before"]
    assert_pngs(figures, ["06_residual.png", "06_accuracy.png"])


@pytest.mark.tutorial
@pytest.mark.parametrize("source", SOURCES, ids=[s.stem for s in SOURCES])
def test_tutorial_notebook_matches_source(source):
    jupytext = pytest.importorskip("jupytext")
    import nbformat

    notebook = source.with_suffix(".ipynb")
    assert notebook.is_file(), f"run: jupytext --to ipynb {source.name}"
    stored = nbformat.read(notebook, as_version=4)
    nbformat.validate(stored)
    expected = jupytext.read(source)
    assert [(c.cell_type, c.source) for c in stored.cells] == [
        (c.cell_type, c.source) for c in expected.cells
    ], f"{notebook.name} is out of date: jupytext --to ipynb {source.name}"
    assert stored.metadata["kernelspec"]["name"] == "python3"
    for cell in stored.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, "commit without outputs"


def test_tutorials_are_listed():
    assert [s.name[:3] for s in SOURCES] == ["01_", "02_", "03_", "04_", "05_", "06_"]
    readme = (TUTORIALS / "README.md").read_text()
    assert all(s.with_suffix(".ipynb").name in readme for s in SOURCES)


def test_moving_digit_events_are_nmnist_shaped():
    from snntorch_localzo.demo.data import EVENT_DTYPE, moving_digit_events

    events, labels = moving_digit_events(6, split="test", seed=3)
    assert len(events) == 6 and labels.shape == (6,) and labels.dtype == np.int64
    for ev in events:
        assert ev.dtype == EVENT_DTYPE and ev.dtype.names == ("x", "y", "t", "p")
        assert len(ev) > 500
        assert np.all(np.diff(ev["t"]) >= 0) and ev["t"].min() >= 0 and ev["t"].max() < 300_000
        assert ev["x"].min() >= 0 and ev["x"].max() < 34 and ev["y"].min() >= 0 and ev["y"].max() < 34
        assert set(np.unique(ev["p"])) == {0, 1}
    again, labels_again = moving_digit_events(6, split="test", seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(events, again))
    assert np.array_equal(labels, labels_again)
    with pytest.raises(ValueError, match="split"):
        moving_digit_events(2, split="validation")
