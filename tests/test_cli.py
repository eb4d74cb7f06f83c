"""The main job: ``snntorch-localzo`` / ``python -m snntorch_localzo``."""

import json
import re
import subprocess
import sys
from importlib import metadata

import pytest
import torch

from snntorch_localzo.demo import cli


def test_demo_trains_both_and_prints_table(tmp_path, capsys):
    out_json = tmp_path / "runs.json"
    args = ["--epochs", "2", "--hidden", "24", "--steps", "6", "--runs", "2"]
    args += ["--delta", "0.05", "--device", "cpu", "--no-progress", "--json", str(out_json)]
    assert cli.main(args) == 0
    text = capsys.readouterr().out
    atan = re.search(r"^snntorch\.surrogate\.atan\(\)\s+(\S+) ± \S+\s+(\S+) ± \S+\s+(\S+)", text, re.M)
    lzo = re.search(r"^localzo\.make\('normal', delta=0\.05\)\s+(\S+) ± \S+\s+(\S+) ± \S+\s+(\S+)", text, re.M)
    assert atan and lzo, text
    assert float(atan.group(2)) == pytest.approx(100.0)  # a surrogate is dense
    assert 0.0 < float(lzo.group(2)) < 50.0  # LocalZO is sparse
    for m in (atan, lzo):
        assert 10.0 < float(m.group(1)) <= 100.0  # better than chance after 2 epochs
    runs = json.loads(out_json.read_text())
    assert [len(r) for r in runs] == [2, 2]
    assert [r["seed"] for r in runs[1]] == [0, 1]
    assert all(len(r["test_acc"]) == 2 and len(r["epoch_s"]) == 2 for rs in runs for r in rs)


def test_same_seed_same_result():
    from snntorch_localzo import make
    from snntorch_localzo.demo.train import train_digits

    kwargs = dict(seed=3, epochs=1, hidden=16, num_steps=4, device="cpu")
    a = train_digits(make(delta=0.2, track=True), **kwargs)
    b = train_digits(make(delta=0.2, track=True), **kwargs)
    assert a.test_acc == b.test_acc and a.active_frac == b.active_frac


def test_module_entry_point_help():
    out = subprocess.run(
        [sys.executable, "-m", "snntorch_localzo", "--help"], capture_output=True, text=True
    )
    assert out.returncode == 0 and "--delta" in out.stdout and "--epochs" in out.stdout


def test_console_script_is_declared():
    scripts = {ep.name: ep.value for ep in metadata.entry_points(group="console_scripts")}
    assert scripts.get("snntorch-localzo") == "snntorch_localzo.demo.cli:main"


BAD_OPTIONS = [
    (["--dist", "gauss"], "--dist"),
    (["--epochs", "0"], "--epochs"),
    (["--runs", "-2"], "--runs"),
    (["--delta", "-1"], "--delta"),
    (["--delta", "nan"], "--delta"),
    (["--samples", "0"], "--samples"),
    (["--samples", "1.5"], "--samples"),
    (["--steps", "0"], "--steps"),
    (["--hidden", "0"], "--hidden"),
    (["--device", "gpu"], "--device"),
    (["--dist", "atan", "--delta", "0.02"], "--delta"),
    (["--dist", "normal", "--alpha", "2"], "--alpha"),
    (["--dist", "atan", "--slope", "5"], "--slope"),
    (["--json", "/nonexistent-folder/runs.json"], "--json"),
    (["--plots", "/proc/version"], "--plots"),
] + ([] if torch.cuda.is_available() else [(["--device", "cuda"], "--device")])


def _error_lines(stderr):
    return [line for line in stderr.strip().splitlines()
            if not line.startswith("usage:") and not line.startswith(" ")]


@pytest.mark.parametrize("argv,option", BAD_OPTIONS, ids=[" ".join(a) for a, _ in BAD_OPTIONS])
def test_bad_option_ends_in_one_line_naming_it(argv, option, capsys):
    """Checked before any training (nothing printed on stdout): exit code 2,
    one line naming the option."""
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    assert info.value.code == 2
    captured = capsys.readouterr()
    lines = _error_lines(captured.err)
    assert len(lines) == 1 and f"argument {option}" in lines[0], captured.err
    assert captured.out == ""


def test_bad_option_from_the_shell_has_no_traceback():
    out = subprocess.run([sys.executable, "-m", "snntorch_localzo", "--delta", "-1"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert _error_lines(out.stderr) == ["snntorch-localzo: error: argument --delta: expected a "
                                        "finite number > 0, got -1"]


def test_twin_parameters_reach_the_estimator(capsys):
    args = ["--epochs", "1", "--hidden", "8", "--steps", "3", "--device", "cpu", "--no-progress"]
    assert cli.main(args + ["--dist", "atan", "--alpha", "3"]) == 0
    text = capsys.readouterr().out
    assert "localzo.make('atan', alpha=3)" in text and "1 epoch," in text and "seed [0]" in text


def test_linear_leaky_switch_trains_the_same_network(capsys):
    args = ["--epochs", "1", "--hidden", "16", "--steps", "4", "--delta", "0.05", "--device", "cpu",
            "--no-progress", "--linear-leaky"]
    assert cli.main(args) == 0
    text = capsys.readouterr().out
    row = re.search(r"^LinearLeaky, localzo\.make\('normal', delta=0\.05\)\s+(\S+)\s+(\S+)", text, re.M)
    assert row, text
    assert 10.0 < float(row.group(1)) <= 100.0 and 0.0 < float(row.group(2)) < 50.0


PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_plots_option_writes_pngs(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    out = tmp_path / "plots"
    args = ["--epochs", "2", "--hidden", "16", "--steps", "4", "--runs", "2", "--delta", "0.05"]
    args += ["--device", "cpu", "--no-progress", "--plots", str(out)]
    assert cli.main(args) == 0
    text = capsys.readouterr().out
    for name in ("accuracy_per_epoch.png", "active_fraction_per_epoch.png",
                 "expected_vs_estimated_gradient.png"):
        data = (out / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5000, name
        assert f"wrote {out / name}" in text


def test_plotted_monte_carlo_mean_matches_expected_gradient():
    from snntorch_localzo import make

    est = make("laplace", delta=0.1)
    u = torch.linspace(-0.3, 0.3, 12, dtype=torch.float64)
    torch.manual_seed(0)
    mean, err = cli.monte_carlo_grad(est, u, 20000)
    expected = est.expected_grad(u).double()
    assert torch.all((mean - expected).abs() <= 5 * err + 1e-3 * expected.max())
    assert torch.all(err > 0)


def test_package_imports_without_matplotlib():
    code = (
        "import sys\n"
        "sys.modules['matplotlib'] = None\n"
        "import snntorch_localzo, snntorch_localzo.demo.cli, snntorch_localzo.demo.train, snntorch_localzo.demo.data\n"
        "from snntorch_localzo.demo import plots\n"
        "try:\n"
        "    plots.figure()\n"
        "except ImportError as exc:\n"
        "    assert 'snntorch-localzo[plots]' in str(exc), exc\n"
        "else:\n"
        "    raise SystemExit('plots.figure() worked without matplotlib')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_accuracy_study_script(tmp_path, capsys):
    """benchmarks/accuracy.py (built on the CLI's table): tiny run, then --replot."""
    import importlib.util
    from pathlib import Path

    pytest.importorskip("matplotlib")
    path = Path(__file__).resolve().parent.parent / "benchmarks" / "accuracy.py"
    spec = importlib.util.spec_from_file_location("accuracy_study", path)
    study = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(study)
    out, png = tmp_path / "acc.json", tmp_path / "acc.png"
    names = ["snntorch.surrogate.sigmoid()", "localzo.make('normal', delta=0.05)"]
    args = ["--seeds", "2", "--epochs", "1", "--hidden", "8", "--steps", "3", "--delta", "0.05",
            "--only", names[0], "--only", names[1], "--out", str(out), "--plot", str(png)]
    assert study.main(args) == 0
    saved = json.loads(out.read_text())
    assert [r["name"] for r in saved["summary"]] == names
    assert saved["settings"]["seeds"] == [0, 1] and saved["settings"]["delta"] == 0.05
    assert [len(runs) for runs in saved["runs"].values()] == [2, 2]
    # snnTorch's sigmoid surrogate overflows far below threshold: the script says so
    assert any(n.startswith("snntorch.surrogate.sigmoid(): backward is nan") for n in saved["notes"])
    assert 0.0 < saved["summary"][1]["active_frac_mean"] < 0.5
    assert png.read_bytes().startswith(PNG_MAGIC)
    first = capsys.readouterr().out
    png.unlink()
    assert study.main(["--replot", "--out", str(out), "--plot", str(png)]) == 0
    table = capsys.readouterr().out
    assert table.split("\n")[:4] == first[first.index("spike_grad"):].split("\n")[:4]
    assert png.is_file()
