"""The main job: ``snntorch-localzo`` / ``python -m snntorch_localzo``."""

import json
import re
import subprocess
import sys
from importlib import metadata

import pytest

from snntorch_localzo import cli


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
    from snntorch_localzo.demo import train_digits

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
    assert scripts.get("snntorch-localzo") == "snntorch_localzo.cli:main"


def test_bad_arguments_are_rejected(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--dist", "gauss"])
    with pytest.raises(SystemExit):
        cli.main(["--epochs", "0"])
