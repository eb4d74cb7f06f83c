"""Tutorial 5 (OPZO) runs offline on the CPU in its fast mode, does what its
text says, and its notebook is the jupytext conversion of its source."""

import runpy
from pathlib import Path

import pytest

TUTORIAL = Path(__file__).resolve().parent.parent / "tutorials" / "05_opzo.py"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def run_tutorial(tmp_path, monkeypatch):
    figures = tmp_path / "figures"
    monkeypatch.setenv("SNNTORCH_LOCALZO_TUTORIAL_FAST", "1")
    monkeypatch.setenv("SNNTORCH_LOCALZO_FIGURES", str(figures))
    monkeypatch.chdir(tmp_path)
    return lambda: (runpy.run_path(str(TUTORIAL), run_name="__main__"), figures)


@pytest.mark.tutorial
def test_tutorial_05_opzo(run_tutorial):
    import torch

    threads = torch.get_num_threads()
    try:
        g, figures = run_tutorial()
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
    for name in ("05_feedback_estimate.png", "05_training.png"):
        data = (figures / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 2000, name


@pytest.mark.tutorial
def test_tutorial_05_notebook_matches_source():
    jupytext = pytest.importorskip("jupytext")
    import nbformat

    notebook = TUTORIAL.with_suffix(".ipynb")
    assert notebook.is_file(), f"run: jupytext --to ipynb {TUTORIAL.name}"
    stored = nbformat.read(notebook, as_version=4)
    nbformat.validate(stored)
    expected = jupytext.read(TUTORIAL)
    assert [(c.cell_type, c.source) for c in stored.cells] == [
        (c.cell_type, c.source) for c in expected.cells
    ], f"{notebook.name} is out of date: jupytext --to ipynb {TUTORIAL.name}"
    assert stored.metadata["kernelspec"]["name"] == "python3"
    for cell in stored.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, "commit without outputs"


def test_tutorial_05_is_listed():
    readme = (TUTORIAL.parent / "README.md").read_text()
    assert "05_opzo.ipynb" in readme
