"""Tutorial 6 (ANN-to-SNN conversion with FTBC) runs offline on the CPU in its
fast mode and does what its text says. Same discipline as
``tests/test_tutorials.py``: executed in this process with
``SNNTORCH_LOCALZO_TUTORIAL_FAST=1``, figures sent to a temporary folder,
assertions on the variables it leaves behind."""

import runpy
from pathlib import Path

import pytest
import torch

TUTORIAL = Path(__file__).resolve().parent.parent / "tutorials" / "06_conversion.py"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.mark.tutorial
def test_tutorial_06_conversion(tmp_path, monkeypatch):
    figures = tmp_path / "figures"
    monkeypatch.setenv("SNNTORCH_LOCALZO_TUTORIAL_FAST", "1")
    monkeypatch.setenv("SNNTORCH_LOCALZO_FIGURES", str(figures))
    monkeypatch.chdir(tmp_path)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # many tiny operations: no waiting on threads on a loaded CPU
    try:
        g = runpy.run_path(str(TUTORIAL), run_name="__main__")
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
    for name in ("06_residual.png", "06_accuracy.png"):
        data = (figures / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 2000, name
