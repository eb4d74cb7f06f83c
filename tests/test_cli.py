"""The main job: ``snntorch-localzo`` / ``python -m snntorch_localzo``."""

import json
import re
import subprocess
import sys
from importlib import metadata

import pytest
import torch

import snntorch_localzo as localzo
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
    (["--delta", "fixed"], "--delta"),
    (["--dist", "atan", "--delta", "0.02"], "--delta"),
    (["--dist", "atan", "--delta", "adaptive"], "--delta"),
    (["--dist", "normal", "--alpha", "2"], "--alpha"),
    (["--dist", "atan", "--slope", "5"], "--slope"),
    (["--json", "/nonexistent-folder/runs.json"], "--json"),
    (["--plots", "/proc/version"], "--plots"),
] + ([] if torch.cuda.is_available() else [(["--device", "cuda"], "--device")])


@pytest.mark.parametrize("argv,option", BAD_OPTIONS, ids=[" ".join(a) for a, _ in BAD_OPTIONS])
def test_bad_option_ends_in_one_line_naming_it(argv, option, capsys):
    """Checked before any training (nothing printed on stdout): exit code 2,
    one line naming the option, no usage dump."""
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    assert info.value.code == 2
    captured = capsys.readouterr()
    assert captured.err.startswith(f"snntorch-localzo: error: argument {option}: "), captured.err
    assert captured.err.endswith(" (see --help)\n") and captured.err.count("\n") == 1
    assert captured.out == ""


def _run(*argv, timeout=300):
    """The command as a user types it: ``python -m snntorch_localzo ...``, in a
    process whose stderr is a pipe (not a terminal)."""
    return subprocess.run([sys.executable, "-m", "snntorch_localzo", *argv],
                          capture_output=True, text=True, timeout=timeout)


NO_FOLDER = "/nonexistent-folder/runs.json"
SHELL_ERRORS = [  # argparse's own checks and the commands' later ones, in each command
    (("--delta", "-1"), "snntorch-localzo", "--delta"),
    (("opzo", "--epochs", "1", "--json", NO_FOLDER), "snntorch-localzo opzo", "--json"),
    (("ftbc", "--epochs", "1", "--json", NO_FOLDER), "snntorch-localzo ftbc", "--json"),
    (("ftbc", "--image-size", "16"), "snntorch-localzo ftbc", "--image-size"),
]


@pytest.mark.heavy
@pytest.mark.parametrize("argv,prog,option", SHELL_ERRORS,
                         ids=[" ".join(a) for a, _, _ in SHELL_ERRORS])
def test_every_command_reports_a_bad_option_in_one_line_before_training(argv, prog, option):
    """One format for every subcommand: ``prog: error: argument --x: ... (see
    --help)``, exit code 2; paths are checked before anything trains (no
    output on stdout) and --image-size is not silently ignored on digits."""
    out = _run(*argv)
    assert out.returncode == 2 and out.stdout == "", (out.stdout, out.stderr)
    assert out.stderr.startswith(f"{prog}: error: argument {option}: "), out.stderr
    assert out.stderr.endswith(" (see --help)\n") and out.stderr.count("\n") == 1, out.stderr


TINY = ["--epochs", "1", "--hidden", "8", "--steps", "3", "--device", "cpu"]


@pytest.mark.heavy
def test_demo_runs_the_default_make_and_draws_no_bar_into_a_log(capsys):
    """Without --delta the LocalZO row is ``make()`` (uniform law, adaptive
    step), the same run as ``--delta adaptive``; with stderr captured (not a
    terminal) the progress bar writes nothing."""
    out = _run(*TINY)
    assert out.returncode == 0, out.stderr
    assert "\r" not in out.stderr and "batch" not in out.stderr, out.stderr[:300]
    per_seed = [line for line in out.stdout.splitlines() if line.startswith("localzo.make")]
    assert per_seed and per_seed[-1].startswith("localzo.make(): seed 0: "), out.stdout
    assert cli.main(TINY + ["--delta", "adaptive", "--no-progress"]) == 0
    assert per_seed[-1] in capsys.readouterr().out.splitlines()
    est = cli._localzo_from_args(cli.build_parser().parse_args(TINY))
    assert est.adaptive and est == localzo.make()


def test_progress_bars_write_nothing_when_stderr_is_not_a_terminal(monkeypatch):
    import io

    from snntorch_localzo._progress import progress_bar

    pytest.importorskip("tqdm")
    log = io.StringIO()
    monkeypatch.setattr(sys, "stderr", log)
    bar = progress_bar(50, unit="batch")
    for _ in range(50):
        bar.update(1)
    bar.close()
    assert log.getvalue() == ""
    assert progress_bar(50, enabled=False) is None  # --no-progress


def test_every_progress_bar_of_the_package_is_the_one_helper():
    """tqdm is created in one place (_progress.py), so the rule above holds for
    the demo, opzo and ftbc alike."""
    from pathlib import Path

    import snntorch_localzo

    root = Path(snntorch_localzo.__file__).parent
    users = sorted(str(p.relative_to(root)) for p in root.rglob("*.py")
                   if re.search(r"(from|import) tqdm", p.read_text()) and p.name != "_progress.py")
    assert users == [], users


def test_table_keeps_its_columns_with_long_names():
    from snntorch_localzo.demo.train import RunResult

    rows = [[RunResult(name, 0, test_acc=[0.5], active_frac=[0.1], epoch_s=[1.0])]
            for name in ("short", "LinearLeaky, localzo.make('laplace', delta=0.008, samples=2)")]
    lines = cli.format_table(rows).splitlines()
    header, first, second = lines[0], lines[2], lines[3]
    assert len(first) == len(second) == len(header)
    assert first.index("50.00") == second.index("50.00")


def test_readme_quick_start_names_every_option_and_shows_its_table():
    """The README's options list is the parser's, and its first table is the
    output of the quick-start command with the current defaults."""
    from pathlib import Path

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    quick = readme[readme.index("## Quick start"):readme.index("## Tutorials")]
    options = {a.option_strings[-1] for a in cli.build_parser()._actions if a.option_strings}
    missing = sorted(o for o in options - {"--help"} if f"`{o}" not in quick)
    assert missing == [], missing
    command = re.search(r"\.venv/bin/snntorch-localzo([^\n`]*)", quick).group(1).strip()
    said = f"Output of the quick-start command (`snntorch-localzo {command}`"
    assert said in " ".join(quick.split())
    opts = cli.build_parser().parse_args(command.split())
    table = quick[quick.index("```\nSpike-encoded digits"):]
    assert f"{opts.epochs} epochs" in table.splitlines()[1]
    seeds = list(range(opts.seed, opts.seed + opts.runs))
    assert f"seeds {seeds}" in table.splitlines()[1]
    est = cli._localzo_from_args(opts)
    assert f"\n{cli.call_string(est)} " in table


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


@pytest.mark.parametrize("adaptive", [False, True])
def test_plotted_monte_carlo_mean_matches_expected_gradient(adaptive):
    """The figure's points: with a fixed step the law's surrogate; with the
    default adaptive step the height-one bump of the step the sample's
    membranes give (a bump, not flat: every draw is one sample holding all
    the points)."""
    from snntorch_localzo import make

    est = make() if adaptive else make("laplace", delta=0.1)
    u = torch.linspace(-0.3, 0.3, 81 if adaptive else 12, dtype=torch.float64)  # > exact: drawn; 0 in it
    torch.manual_seed(0)
    mean, err = cli.monte_carlo_grad(est, u, 20000)
    expected = cli.expected_grad(est, u, 20000)
    if not adaptive:
        assert torch.allclose(expected, est.expected_grad(u).double(), rtol=1e-6)
    else:
        assert expected.max() > 0.9 and expected.min() < 0.1
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


def test_compare_plot_gives_each_implementation_one_colour_and_its_speed_up(tmp_path, monkeypatch):
    """docs/img/compare_cpu.png: groups by T, one colour per implementation in
    every group, bar heights the speed-ups over snnTorch of the committed JSON."""
    import importlib.util
    from pathlib import Path

    pytest.importorskip("matplotlib")
    from snntorch_localzo.demo import plots

    root = Path(__file__).resolve().parent.parent
    spec = importlib.util.spec_from_file_location("compare_plot",
                                                  root / "benchmarks" / "compare.py")
    compare = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(compare)
    rows = json.loads((root / "benchmarks" / "results" / "cpu.json").read_text())
    figures = []
    real = plots.grouped_bars_figure
    monkeypatch.setattr(plots, "grouped_bars_figure",
                        lambda *a, **k: figures.append(real(*a, **k)) or figures[-1])
    assert compare.plot(rows, tmp_path / "c.png").is_file()
    speed_up = figures[0].axes[0]
    impls = list(dict.fromkeys(r["impl"] for r in rows))
    Ts = list(dict.fromkeys(r["T"] for r in rows))
    assert [t.get_text() for t in figures[0].axes[-1].get_xticklabels()] == [f"T={T}" for T in Ts]
    bars = {}  # implementation -> its bars, in the order of the groups
    for container, impl in zip(speed_up.containers, impls):
        assert container.get_label() == impl
        bars[impl] = list(container)
    colours = {impl: {b.get_facecolor() for b in bs} for impl, bs in bars.items()}
    assert all(len(c) == 1 for c in colours.values())  # the same colour at every T
    assert len({c.pop() for c in colours.values()}) == len(impls)  # and its own
    for r in rows:
        base = next(b for b in rows if b["impl"] == "snntorch_atan" and b["T"] == r["T"])
        height = bars[r["impl"]][Ts.index(r["T"])].get_height()
        expected = (base["fwd_ms"] + base["bwd_ms"]) / (r["fwd_ms"] + r["bwd_ms"])
        assert height == pytest.approx(expected)


def test_sampling_option_reaches_the_estimator(capsys):
    args = ["--epochs", "1", "--hidden", "96", "--steps", "3", "--device", "cpu", "--no-progress"]
    assert cli.main(args + ["--sampling", "gradient"]) == 0
    assert "localzo.make(sampling='gradient')" in capsys.readouterr().out
    opts = cli.build_parser().parse_args(["--sampling", "gradient", "--delta", "0.05"])
    est = cli._localzo_from_args(opts)
    assert est.sampling == "gradient" and est.spec.weighted
    assert cli.call_string(est) == "localzo.make('normal', delta=0.05, sampling='gradient')"
