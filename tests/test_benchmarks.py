"""The benchmark scripts run (tiny sizes, CPU) and the saved-state claim holds.
No timing is asserted anywhere: timings live in benchmarks/ and the README."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch

import snntorch_localzo as localzo
from conftest import KERNELS
from snntorch_localzo.neurons.leaky import MODERN_SNNTORCH
from snntorch_localzo._ops import planner

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"


def load(name):
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_compare_smoke(tmp_path, capsys):
    compare = load("compare")
    out = tmp_path / "r.json"
    png = tmp_path / "r.png"
    args = ["--device", "cpu", "--T", "3", "--batch", "4", "--hidden", "16",
            "--repeats", "1", "--warmup", "0", "--out", str(out), "--plot", str(png)]
    assert compare.main(args) == 0
    assert png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    table = capsys.readouterr().out
    png.unlink()
    assert compare.main(["--replot", "--out", str(out), "--plot", str(png)]) == 0
    assert png.is_file()
    assert format_rows(capsys.readouterr().out) == format_rows(table)
    rows = json.loads(out.read_text())
    assert [r["impl"] for r in rows] == compare.IMPLS  # one row each, measured or not
    assert [r["impl"] for r in compare.measured(rows)] == [i for i in compare.IMPLS if compare.available(i)]
    keys = {"impl", "backend", "T", "B", "hidden", "fwd_ms", "bwd_ms", "peak_mib", "active_frac",
            "device", "torch", "triton", "saved_mib", "energy_j", "threads", "malloc", "interleaved",
            "init_gain", "error"}
    assert all(set(r) == keys for r in rows)
    assert not any(r["interleaved"] for r in rows)
    assert all(r["error"] == "not installed" for r in rows if not compare.available(r["impl"]))
    rows = compare.measured(rows)
    assert rows[0]["backend"] == "pytorch" and rows[2]["backend"] == "native"  # localzo_step on the CPU
    assert all(r["fwd_ms"] > 0 and r["bwd_ms"] > 0 for r in rows)
    assert rows[0]["active_frac"] == 1.0  # ATan: every entry has a gradient
    assert all(r["saved_mib"] > 0 for r in rows) and all(r["energy_j"] is None for r in rows)
    assert "snntorch_atan" in table


def test_compare_sampling_rows_run_make_with_that_sampling(tmp_path):
    """``ROW+law`` and ``ROW+gradient``: the make() rows with that ``sampling``,
    measured beside the others (the rows themselves: make()'s own); any other
    suffix or row is refused by name."""
    compare = load("compare")
    impls = [row + "+" + s for row in compare.SAMPLING_ROWS for s in compare.SAMPLINGS]
    for impl in impls + list(compare.SAMPLING_ROWS):
        sgs = {id(m.spike_grad): m.spike_grad for m in compare.build(impl, 16, False).modules()
               if isinstance(getattr(m, "spike_grad", None), localzo.LocalZO)}
        sampling = impl.partition("+")[2] or "auto"
        assert list(sgs.values()) == [localzo.make(sampling=sampling)]
    for bad in ("localzo_seq+gradient", "snntorch_localzo+auto", "snntorch_atan+law"):
        with pytest.raises(ValueError, match=r"\+gradient"):
            compare.build(bad, 16, False)
    impls = [row + "+gradient" for row in compare.SAMPLING_ROWS]
    out = tmp_path / "g.json"
    assert compare.main(["--device", "cpu", "--T", "3", "--batch", "4", "--hidden", "16", "--repeats", "1",
                         "--warmup", "0", "--impls", ",".join(impls), "--out", str(out), "--plot", "none"]) == 0
    rows = json.loads(out.read_text())
    assert [r["impl"] for r in rows] == impls and all(r["error"] is None and r["bwd_ms"] > 0 for r in rows)


def test_compare_init_gain_scales_the_hidden_layers_and_is_recorded(tmp_path):
    """--init-gain multiplies every hidden layer's initial weights (not the
    output layer's) of every implementation, and each row records it."""
    compare = load("compare")
    for impl in ("snntorch_atan", "localzo_sparse"):
        torch.manual_seed(0)
        plain = [m.weight.clone() for m in compare.build(impl, 16, track=False).modules()
                 if isinstance(m, torch.nn.Linear)]
        torch.manual_seed(0)
        scaled = [m.weight for m in compare.build(impl, 16, track=False, gain=4.0).modules()
                  if isinstance(m, torch.nn.Linear)]
        assert len(plain) == 3
        assert all(torch.equal(b, 4.0 * a) for a, b in zip(plain[:2], scaled[:2]))
        assert torch.equal(plain[2], scaled[2])
    out = tmp_path / "g.json"
    assert compare.main(["--device", "cpu", "--T", "3", "--batch", "4", "--hidden", "16", "--repeats", "1",
                         "--warmup", "0", "--out", str(out), "--plot", "none", "--impls", "localzo_sparse",
                         "--init-gain", "4"]) == 0
    rows = json.loads(out.read_text())
    assert rows[0]["init_gain"] == 4.0 and rows[0]["error"] is None


def test_compare_scaling_table_is_time_per_neuron_step():
    compare = load("compare")
    row = dict(impl="a", T=2, B=4, hidden=16, fwd_ms=1.5, bwd_ms=0.5, error=None)
    # 2 ms over 2 steps * 4 samples * (16 + 16 + 20) neurons
    assert compare.ns_per_neuron_step(row) == pytest.approx(2e6 / (2 * 4 * 52))
    rows = [row, dict(row, T=4), dict(row, impl="b", fwd_ms=3.5)]
    lines = compare.scaling_table(rows).splitlines()
    assert "T=2 h=16" in lines[0] and "T=4 h=16" in lines[0]
    a, b = lines[2].split(), lines[3].split()
    assert a[0] == "a" and float(a[1]) == pytest.approx(4807.69, abs=0.01)
    assert float(a[2]) == pytest.approx(4807.69 / 2, abs=0.01)
    assert b[0] == "b" and float(b[1]) == pytest.approx(2 * 4807.69, abs=0.02) and b[2] == "-"


def format_rows(text):
    """The table's lines (from its header to its footnote)."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("impl"))
    end = next(i for i, line in enumerate(lines) if line.startswith("(x: speed-up"))
    return lines[start:end + 1]


@pytest.mark.skipif(not KERNELS, reason="needs Triton")
@pytest.mark.skipif(not MODERN_SNNTORCH, reason="localzo.Leaky takes snnTorch 0.7's own forward "
                    "(its Leaky keeps state differently): no fused step to measure")
def test_fused_leaky_keeps_one_byte_per_neuron_step():
    saved = load("saved_bytes")
    ours = saved.saved_bytes_per_neuron_step(lambda: localzo.Leaky(beta=0.9), torch.float32,
                                             backend="triton")
    theirs = saved.saved_bytes_per_neuron_step(saved.LAYERS["snn.Leaky + surrogate.atan()"],
                                               torch.float32, backend="reference")
    assert 1.0 <= ours < 1.05
    assert theirs >= 4.0


@pytest.mark.skipif(not KERNELS, reason="needs Triton")
def test_compare_localzo_impls_on_the_kernels(tmp_path):
    compare = load("compare")
    out = tmp_path / "r.json"
    args = ["--device", "cpu", "--T", "3", "--batch", "4", "--hidden", "72", "--repeats", "1",
            "--warmup", "0", "--out", str(out), "--plot", "none",
            "--impls", "localzo_step,localzo_seq,localzo_dense,localzo_sparse"]
    with localzo.use_backend("triton"):
        assert compare.main(args) == 0
    rows = json.loads(out.read_text())
    assert [r["impl"] for r in rows] == ["localzo_step", "localzo_seq", "localzo_dense", "localzo_sparse"]
    # localzo_step uses make(): silent untrained layers (its wide band) and 20 outputs given
    # the expected value (every entry); the others a fixed delta
    assert all(0.0 <= r["active_frac"] < (0.7 if r["impl"] == "localzo_step" else 0.5) for r in rows)
    assert all(r["backend"] == "triton" and r["error"] is None for r in rows)


def test_compare_keeps_going_past_a_failing_row_and_writes_as_it_goes(tmp_path, monkeypatch):
    """A row that raises is recorded with its error and the next rows run;
    the JSON on disk holds every row finished so far."""
    compare = load("compare")
    out = tmp_path / "r.json"
    seen = []
    real = compare.measure

    def measure(impl, *args, **kwargs):
        seen.append(json.loads(out.read_text()) if out.exists() else [])
        if impl == "localzo_seq":
            raise RuntimeError("CUDA error: an illegal memory access was encountered\nmore")
        return real(impl, *args, **kwargs)

    monkeypatch.setattr(compare, "measure", measure)
    args = ["--device", "cpu", "--T", "3", "--batch", "4", "--hidden", "72", "--repeats", "1",
            "--warmup", "0", "--out", str(out), "--plot", "none",
            "--impls", "snntorch_atan,localzo_seq,localzo_dense"]
    assert compare.main(args) == 0
    rows = json.loads(out.read_text())
    assert [r["error"] for r in rows] == [
        None, "RuntimeError: CUDA error: an illegal memory access was encountered", None]
    assert rows[1]["fwd_ms"] is None and rows[2]["fwd_ms"] > 0
    assert [len(s) for s in seen] == [0, 1, 2]  # written after every row
    assert compare.main(args + ["--deadline", "0"]) == 0
    assert [r["error"] for r in json.loads(out.read_text())] == ["past --deadline"] * 3


def test_compare_interleaves_the_rows_of_one_size(tmp_path, monkeypatch):
    """--interleave times every implementation of a (T, hidden) in rounds (one
    step of each per round, the order rotated), and a network that fails to
    build or step is recorded with its error while the others are measured."""
    compare = load("compare")
    out = tmp_path / "r.json"
    steps = []
    real_time = compare.time_training_steps

    def timed(model, *args, **kwargs):
        steps.append(type(model).__name__ + str(len(list(model.parameters()))))
        return real_time(model, *args, **kwargs)

    real_build = compare.build

    def build(impl, *args, **kwargs):
        if impl == "localzo_seq" and not kwargs.get("track"):
            raise RuntimeError("no such layer here")
        return real_build(impl, *args, **kwargs)

    monkeypatch.setattr(compare, "time_training_steps", timed)
    monkeypatch.setattr(compare, "build", build)
    args = ["--device", "cpu", "--T", "3", "--batch", "4", "--hidden", "16", "--repeats", "2",
            "--warmup", "1", "--out", str(out), "--plot", "none", "--interleave",
            "--impls", "snntorch_atan,localzo_seq,localzo_sparse"]
    assert compare.main(args) == 0
    rows = json.loads(out.read_text())
    assert [r["error"] for r in rows] == [None, "RuntimeError: no such layer here", None]
    assert all(r["interleaved"] for r in rows)
    assert rows[0]["fwd_ms"] > 0 and rows[2]["bwd_ms"] > 0 and rows[2]["active_frac"] < 0.5
    # three rounds of two networks, alternating, the first one first then second
    assert len(steps) == 6 and steps[0] != steps[1] and steps[2] == steps[1] and steps[3] == steps[0]
    with pytest.raises(SystemExit):
        compare.main(args + ["--energy"])


def test_train_active_smoke(tmp_path):
    train = load("train_active")
    out = tmp_path / "t.json"
    assert train.main(["--device", "cpu", "--T", "4", "--batch", "8", "--hidden", "16",
                       "--steps", "4", "--log", "2", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert [r["step"] for r in result["log"]] == [2, 4]
    assert all(0.0 <= r["active_frac"] <= 1.0 for r in result["log"])
    # make()'s default from the silent init: its wide silent band keeps far more
    # than the fixed step's few entries active in the first steps
    assert train.main(["--device", "cpu", "--T", "4", "--batch", "8", "--hidden", "80", "--grad", "make",
                       "--init-gain", "1", "--steps", "2", "--log", "2", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["args"]["grad"] == "make" and result["log"][0]["active_frac"] > 0.05


@pytest.mark.version_free
def test_gpu_check_selftest_runs_every_phase_on_the_cpu(tmp_path):
    """benchmarks/gpu_check.py --selftest end to end (preflight, smoke launch,
    tests, profile with sync check and launch counts, both sides of the weight
    gradient's rule, compare rows): the kernels through the interpreter."""
    check = load("gpu_check")
    assert check.main(["--out", str(tmp_path), "--selftest"]) == 0
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["versions"]["torch"] == torch.__version__ and report["problems"] == []
    assert report["preflight"] == [] and report["smoke"]["returncode"] == 0
    counts = report["tests"]["counts"]
    assert counts["passed"] == 1 and counts["skipped"] > 0 and counts["failed"] == 0
    steps = {p["impl"]: p for p in report["profile_steps"]}
    assert list(steps) == list(check.PROFILED)
    assert all(p["host_syncs"] == 0 and p["aten_kernels"] > 0 for p in steps.values())
    assert steps["snntorch_atan"]["triton_launches"] == 0 and steps["localzo_sparse"]["triton_launches"] > 0
    assert steps["localzo_sparse"]["backend"] == "triton"
    assert steps["localzo_adaptive"]["aten_kernels"] > steps["localzo_sparse"]["aten_kernels"]  # the rule's solve
    (side,) = report["weight_grad_rule"]
    assert side["sparse_ms"] > 0 and side["dense_ms"] > 0 and side["rule"] == "dense"  # 8 outputs: narrow
    (result,) = report["compare"]
    rows = json.loads((tmp_path / result["json"]).read_text())
    assert [r["impl"] for r in rows] == check.compare.IMPLS and result["failed_rows"] == []
    assert {r["backend"] for r in rows if r["impl"].startswith("localzo")} == {"triton"}


def test_gpu_check_counts_tests_from_pytest_lines():
    """The tests' summary is counted from pytest -v lines (a run cut by its
    time limit still counts), not pytest's last line."""
    check = load("gpu_check")
    log = ("tests/test_gpu.py::test_a[float32-0] PASSED                 [ 10%]\n"
           "tests/test_gpu.py::test_b SKIPPED (needs a CUDA GPU)         [ 20%]\n"
           "tests/test_x.py::test_c FAILED                               [ 30%]\n"
           "some other line PASSED\n")
    assert check.count_tests(log) == {"passed": 1, "failed": 1, "error": 0, "skipped": 1, "xfail": 0, "xpass": 0}


def test_gpu_check_preflight_names_each_missing_piece(tmp_path, monkeypatch):
    """One clear line per missing piece of Triton's toolchain, before any work."""
    check = load("gpu_check")
    monkeypatch.delenv("CC", raising=False)
    (tmp_path / "Python.h").write_text("")
    assert check.toolchain_problems(lambda name: "/usr/bin/" + name, str(tmp_path), "12.8", "12.4") == []
    lines = check.toolchain_problems(lambda name: None, str(tmp_path / "none"), "12.8", "11.8")
    assert len(lines) == 3 and "no C compiler" in lines[0]
    assert any("Python.h" in line for line in lines)
    assert any("ptxas is CUDA 12.8 but the driver supports CUDA 11.8" in line for line in lines)
    assert not any("pytest" in line for line in check.missing_pieces(torch.device("cpu")))


def test_spikingjelly_row_runs_its_fastest_backend(monkeypatch):
    """On CUDA the peer row is SpikingJelly's Triton (else CuPy) backend, not
    its default PyTorch loop; on the CPU its PyTorch loop; SpikingJelly 2.0
    picks by itself. A stand-in module plays SpikingJelly (a benchmark-only
    dependency, not installed by the tests)."""
    import sys
    import types

    compare = load("compare")
    supported = ["torch", "cupy", "triton"]
    built = []

    class LIFNode:
        def __init__(self, **kwargs):
            built.append(kwargs.get("backend"))
            self.supported_backends = tuple(supported)

    sj = types.ModuleType("spikingjelly")
    ab = types.ModuleType("spikingjelly.activation_based")
    ab.neuron = types.SimpleNamespace(LIFNode=LIFNode)
    ab.surrogate = types.SimpleNamespace(ATan=lambda: None)
    for name, mod in [("spikingjelly", sj), ("spikingjelly.activation_based", ab),
                      ("spikingjelly.activation_based.neuron", ab.neuron),
                      ("spikingjelly.activation_based.surrogate", ab.surrogate)]:
        monkeypatch.setitem(sys.modules, name, mod)
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert compare.spikingjelly_backend(cpu) == "torch"
    assert compare.spikingjelly_backend(cuda) == ("triton" if KERNELS else "torch")
    supported.remove("triton")
    monkeypatch.setitem(sys.modules, "cupy", None)  # CuPy not importable
    assert compare.spikingjelly_backend(cuda) == "torch"
    assert compare.backend_of("spikingjelly", cpu) == "torch"
    built.clear()
    compare._sj_lif(compare.spikingjelly_backend(cpu))
    assert built == ["torch"]  # the backend reaches the neuron

    class LIFNode2:  # SpikingJelly 2.0: no backend argument, it dispatches by device
        def __init__(self, tau=2.0, decay_input=True, v_threshold=1.0, v_reset=0.0,
                     surrogate_function=None, detach_reset=False, step_mode="s", store_v_seq=False):
            built.append(step_mode)

    ab.neuron.LIFNode = LIFNode2
    assert compare.spikingjelly_backend(cuda) == compare.spikingjelly_backend(cpu) == "auto"
    built.clear()
    compare._sj_lif(compare.spikingjelly_backend(cpu))
    assert built == ["m"]


def test_gpu_check_names_why_a_run_fails():
    """Each failed phase, test run, compare row or synchronising step is one
    line of ``problems`` (the exit status is 1 then)."""
    check = load("gpu_check")
    ok = {"returncode": 0, "timed_out": False, "last_line": ""}
    report = {
        "preflight": [], "smoke": dict(ok, returncode=1, last_line="RuntimeError: PTX was compiled by an "
                                       "unsupported toolchain."),
        "tests": {"ok": False, "summary": "3 passed, 1 failed", "log": "gpu_tests.log"},
        "profile": dict(ok, timed_out=True, returncode=-9),
        "profile_steps": [{"impl": "localzo_sparse", "host_syncs": 2}, {"impl": "snntorch_atan", "host_syncs": 5}],
        "compare": [dict(ok, json="compare_h256.json", failed_rows=["localzo_step T=100: RuntimeError: x"])],
    }
    problems = check.problems_of(report)
    assert problems == [
        "smoke: exit 1: RuntimeError: PTX was compiled by an unsupported toolchain. (see smoke.log)",
        "profile: timed out (see profile.log)",
        "tests: 3 passed, 1 failed (see gpu_tests.log)",
        "profile: localzo_sparse synchronised with the host 2 times",
        "compare compare_h256.json: localzo_step T=100: RuntimeError: x",
    ]
    assert check.problems_of({"preflight": [], "smoke": ok, "compare": []}) == []


def test_rule_cost_smoke(tmp_path):
    rule_cost = load("rule_cost")
    out = tmp_path / "r.json"
    assert rule_cost.main(["--repeats", "1", "--tb", "40", "--threads", "1", "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    currents = [r for r in rows if r["what"] == "current"]
    assert len(currents) == 16 and all(r["event_ms"] > 0 and r["dense_ms"] > 0 for r in currents)
    assert [r["n"] for r in rows if r["what"] == "order"] == [20, 256, 2304, 6912]
    draws = [r for r in rows if r["what"] == "draw"]
    assert all(r["sparse_ms"] > 0 and r["dense_ms"] > 0 for r in draws)
    # the planner's choice follows the fraction near threshold
    assert [r["chosen"] for r in draws] == ["dense" if r["near"] > 0.15 else "sparse" for r in draws]
    outers = [r for r in rows if r["what"] == "outer"]
    assert len(outers) == 36 and all(r["event_ms"] > 0 and r["dense_ms"] > 0 for r in outers)
    assert [r["chosen"] for r in outers] == ["event" if r["ones"] <= planner.EVENT_WEIGHT_GRAD_MAX_DENSITY else "dense" for r in outers]
    reverses = [r for r in rows if r["what"] == "reverse"]
    assert len(reverses) == 21 and all(r["events_ms"] > 0 and r["dense_ms"] > 0 for r in reverses)
    assert [r["chosen"] for r in reverses] == ["events" if r["active_per_neuron"] <= 0.05 else "dense"
                                               for r in reverses]
    sampled = [r for r in rows if r["what"] == "sampled"]
    assert len(sampled) == 4 and all(r["c_ms"] > 0 and r["sampled_addmm_ms"] > 0 for r in sampled)
    calls = [r for r in rows if r["what"] == "call"]
    assert [(tuple(r["shape"]), r["membrane"]) for r in calls][:2] == [((64, 128), "firing"), ((64, 128), "silent")]
    assert len(calls) == 14 and all(r["atan_us"] > 0 and r["make_us"] > 0 for r in calls)
    assert (64, 12, 12, 12) in {tuple(r["shape"]) for r in calls}  # (tutorial 6's conv layers)
    assert rule_cost.main(["--repeats", "1", "--what", "sampled", "--tb", "40", "--out", str(out)]) == 0
    assert {r["what"] for r in json.loads(out.read_text())["rows"]} == {"sampled"}
