"""One command that validates and measures the GPU path on a machine with a GPU.

    python benchmarks/gpu_check.py --out DIR            # the full run
    python benchmarks/gpu_check.py --out DIR --quick    # correctness and the T=100 rows
    python benchmarks/gpu_check.py --out DIR --selftest # this script's logic, on the CPU

Phases, each bounded (the work phases run in a subprocess with a time limit;
what a phase finished before its limit is kept):

1. **preflight**: versions (Python, torch, Triton, CUDA, driver, GPU,
   snnTorch) and, before any work, one line per missing piece: pytest, Triton,
   CUDA, a C compiler and ``Python.h`` (Triton builds a driver stub on its
   first launch), Triton's ptxas against the driver's CUDA major version, then one
   Triton launch of the spike function (``smoke``). Without CUDA nothing runs;
   without pytest the tests are skipped; otherwise the run goes on (what does
   not need the missing piece is still measured) and fails at the end;
2. **tests**: the GPU tests and the op and neuron tests on CUDA, one pytest
   per file side by side (a cold Triton cache compiles on all CPU cores;
   pytest ``-v``, passed/failed/skipped counted from its lines, so a run cut
   by its limit still says how far it got);
3. **profile**: one training step of the benchmark network (700-256-256-20,
   T = 100, B = 128) for snnTorch + ATan and the dense, sparse and adaptive
   ``LinearLeaky`` stacks: kernels launched per step (CUDA kernels from
   torch.profiler, Triton launches and aten operations counted), host
   synchronisations (``torch.cuda.set_sync_debug_mode("warn")``; on the CPU
   the operations that would synchronise), the ten longest kernels; and both
   sides of the sparse weight gradient's size rule (sparse kernel and dense
   product timed at the benchmark's layer shapes, with the rule's choice);
4. **compare**: ``benchmarks/compare.py`` at T = 100 and 500 for hidden 256
   and 1024 (SpikingJelly's fastest backend when installed) with the energy
   of a training step from the GPU's counter (``--energy``).

Everything lands in DIR: ``gpu_check.json`` (written again after every
phase), ``profile.json``, the compare JSONs and plots, the test log. The
exit status is 0 only when every phase finished, every test passed, every
compare row has numbers and no LocalZO step synchronised.

Time limits (seconds): full 25 + 140 + 35 + 45 + 45 (under 5 minutes with a
cold Triton cache), ``--quick`` 25 + 40 + 20 + 30 (under 2 minutes: the GPU
tests and the no-sync test, the profile, the T = 100 rows at hidden 256).
``--selftest`` runs every phase on the CPU, the kernels through Triton's
interpreter, at toy sizes: the test suite runs it, so this script cannot rot.
See the README's GPU section for running it on a machine without network.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import sysconfig
import time
import warnings
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch
import torch.nn as nn

from snntorch_localzo.demo.timing import Timer

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import compare  # noqa: E402
from _common import OpRecorder, TritonLaunches  # noqa: E402

GPU_TESTS = ["tests/test_gpu.py", "tests/test_no_sync.py"]
TEST_FILES = GPU_TESTS + ["tests/test_op_spike_and_step.py", "tests/test_sequence.py",
                          "tests/test_neuron_leaky.py", "tests/test_determinism.py",
                          "tests/test_special_values.py"]
PROFILED = ("snntorch_atan", "localzo_dense", "localzo_sparse", "localzo_adaptive")


def _layers(*hidden: int) -> List[tuple]:
    """The (in, out) shapes of the benchmark network's layers for each hidden size."""
    return [shape for h in hidden for shape in zip(compare.sizes(h), compare.sizes(h)[1:])]


#: Per mode: time limits of the phases (s), the tests, the sizes.
MODES = {
    "full": dict(limits=dict(smoke=25, tests=140, profile=35, compare=45), tests=TEST_FILES,
                 T=100, B=128, hidden=256, compare=[(256, [100, 500]), (1024, [100, 500])],
                 rule=dict(shapes=_layers(256, 1024), T=(25, 100), B=128, repeats=5), warmup=3,
                 compare_args=[]),
    "quick": dict(limits=dict(smoke=25, tests=40, profile=20, compare=30), tests=GPU_TESTS,
                  T=100, B=128, hidden=256, compare=[(256, [100])],
                  rule=dict(shapes=_layers(256), T=(25, 100), B=128, repeats=5), warmup=3,
                  compare_args=["--quick"]),
    "selftest": dict(limits=dict(smoke=120, tests=120, profile=120, compare=120),
                     tests=["tests/test_gpu.py", "tests/test_no_sync.py::test_the_recorder_catches_a_synchronising_op"],
                     T=3, B=2, hidden=72, compare=[(72, [2])],  # > make()'s exact: drawn
                     rule=dict(shapes=[(8, 8)], T=(2,), B=2, repeats=1), warmup=1,
                     compare_args=["--batch", "2", "--repeats", "1", "--warmup", "0"]),
}


# --------------------------------------------------------------------------- preflight
def versions(device: torch.device) -> Dict[str, str]:
    import snntorch

    import snntorch_localzo

    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": str(torch.version.cuda),
        "snntorch": snntorch.__version__,
        "snntorch_localzo": snntorch_localzo.__version__,
        "device": compare.device_name(device),
    }
    try:
        import triton

        info["triton"] = triton.__version__
    except ImportError:
        info["triton"] = "not installed"
    if device.type == "cuda" and torch.cuda.is_available():
        info["capability"] = ".".join(map(str, torch.cuda.get_device_capability(device)))
        info["driver_cuda"] = str(_driver_cuda())
        info["ptxas"] = str(_ptxas_release())
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=30)
            info["driver"] = out.stdout.strip().splitlines()[0]
        except Exception:
            info["driver"] = "unknown"
    return info


def _driver_cuda() -> Optional[str]:
    """The newest CUDA version the driver supports (``cuDriverGetVersion``,
    ``12040`` -> ``12.4``), or None where libcuda cannot be loaded."""
    import ctypes

    try:
        code = ctypes.c_int()
        if ctypes.CDLL("libcuda.so.1").cuDriverGetVersion(ctypes.byref(code)) != 0:
            return None
    except (OSError, AttributeError):
        return None
    return f"{code.value // 1000}.{code.value % 1000 // 10}"


def _version_tuple(text: str):
    return tuple(int(p) for p in text.split("."))


def missing_pieces(device: torch.device) -> List[str]:
    """One line per piece the run needs and does not have (empty: all there)."""
    problems = []
    if importlib.util.find_spec("pytest") is None:
        problems.append("pytest is not installed: bring its wheels (pytest, pluggy, iniconfig, packaging) "
                        "with the others (README, GPU section)")
    if importlib.util.find_spec("triton") is None:
        problems.append("Triton is not installed: the GPU path needs it (pip install triton)")
    if device.type != "cuda":
        return problems
    if not torch.cuda.is_available():
        return problems + [f"CUDA is not available to torch {torch.__version__} (CUDA build: "
                           f"{torch.version.cuda}): a CPU build of torch, or no driver"]
    return problems + toolchain_problems(shutil.which, sysconfig.get_paths()["include"], _ptxas_release(),
                                         _driver_cuda())


def toolchain_problems(which: Callable[[str], Optional[str]], include: str, ptxas_release: Optional[str],
                       driver_cuda: Optional[str]) -> List[str]:
    """What Triton's first launch on a GPU needs: a C compiler and
    ``Python.h`` for its driver stub, a ptxas of a CUDA major version the
    driver supports."""
    problems = []
    if not (os.environ.get("CC") or which("cc") or which("gcc") or which("clang")):
        problems.append("no C compiler (cc, gcc, clang or $CC): Triton builds its CUDA driver stub "
                        "with one on its first launch (apt-get install gcc)")
    if not Path(include, "Python.h").is_file():
        problems.append(f"Python.h is not in {include}: Triton's driver stub needs the Python headers "
                        f"(apt-get install python{sys.version_info[0]}.{sys.version_info[1]}-dev)")
    # a newer minor release builds binaries the driver loads (CUDA's minor version
    # compatibility); a newer major one does not (the smoke launch tells for sure)
    if ptxas_release and driver_cuda and _version_tuple(ptxas_release)[0] > _version_tuple(driver_cuda)[0]:
        problems.append(f"Triton's ptxas is CUDA {ptxas_release} but the driver supports CUDA {driver_cuda}: "
                        f"update the driver, or set TRITON_PTXAS_PATH to the ptxas of a CUDA <= {driver_cuda}")
    return problems


def _ptxas_release() -> Optional[str]:
    """The CUDA release of the ptxas Triton uses (``TRITON_PTXAS_PATH`` or the
    one it bundles), or None when it cannot be told."""
    path = os.environ.get("TRITON_PTXAS_PATH")
    if not path:
        spec = importlib.util.find_spec("triton")
        if spec is None or spec.origin is None:
            return None
        path = str(Path(spec.origin).parent / "backends" / "nvidia" / "bin" / "ptxas")
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30).stdout
    except Exception:
        return None
    found = re.search(r"release (\d+\.\d+)", out)
    return found.group(1) if found else None


def smoke(device: torch.device) -> Dict:
    """One forward and backward of the spike function on the Triton path: the
    first launch compiles, builds the driver stub and loads the binary."""
    import snntorch_localzo as localzo

    u = torch.randn(4, 64, device=device, requires_grad=True)
    sg = localzo.make("normal", delta=0.5, track=True)
    with localzo.use_backend("triton"):
        sg(u).sum().backward()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return {"ok": bool(u.grad is not None and sg.meter.calls == 1)}


# --------------------------------------------------------------------------- tests
TEST_LINE = re.compile(r"^\S+::\S.*\s(PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS)\b")


def count_tests(log: str) -> Dict[str, int]:
    """Outcomes counted from pytest ``-v`` lines (one per test, as they run)."""
    counts = {"passed": 0, "failed": 0, "error": 0, "skipped": 0, "xfail": 0, "xpass": 0}
    for line in log.splitlines():
        found = TEST_LINE.match(line)
        if found:
            counts[found.group(1).lower()] += 1
    return counts


def run_tests(out_dir: Path, files: List[str], limit: float, env: Dict[str, str]) -> Dict:
    """The test files side by side, one pytest each (Triton compiles its
    kernels on the CPU: a cold cache compiles in parallel), all stopped at
    ``limit`` seconds; their logs joined in ``gpu_tests.log``."""
    logs = [out_dir / f"gpu_tests_{k}.log" for k in range(len(files))]
    cmds = [[sys.executable, "-m", "pytest", "-v", "-p", "no:cacheprovider", f] for f in files]
    results = _bounded_all(cmds, limit, env, logs)
    log = out_dir / "gpu_tests.log"
    log.write_text("".join(f"===== {f}\n{part.read_text()}" for f, part in zip(files, logs)))
    for part in logs:
        part.unlink()
    counts = count_tests(log.read_text())
    summary = ", ".join(f"{v} {k}" for k, v in counts.items() if v) or "no test ran"
    timed_out = [f for f, r in zip(files, results) if r["timed_out"]]
    if timed_out:
        summary += f" (stopped at the {limit:.0f} s limit: {', '.join(timed_out)})"
    # pytest exits 5 when every test of a file was deselected or there were none
    ok = all(r["returncode"] in (0, 5) and not r["timed_out"] for r in results)
    ok = ok and counts["passed"] + counts["skipped"] > 0 and not counts["failed"] + counts["error"]
    return {"returncode": max(r["returncode"] for r in results), "timed_out": bool(timed_out),
            "seconds": max(r["seconds"] for r in results), "counts": counts, "summary": summary,
            "ok": ok, "log": log.name}


def _bounded(cmd: List[str], limit: float, env: Dict[str, str], log: Path) -> Dict:
    """Runs ``cmd`` with its output going to ``log`` as it comes, killed at
    ``limit`` seconds."""
    return _bounded_all([cmd], limit, env, [log])[0]


def _bounded_all(cmds: List[List[str]], limit: float, env: Dict[str, str], logs: List[Path]) -> List[Dict]:
    """Runs ``cmds`` side by side, each one's output going to its log as it
    comes; those still running at ``limit`` seconds are killed."""
    start = time.perf_counter()
    handles = [open(log, "w") for log in logs]
    procs = [subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
             for cmd, fh in zip(cmds, handles)]
    results = []
    for proc in procs:
        left = max(limit - (time.perf_counter() - start), 0.01)
        try:
            returncode, timed_out = proc.wait(timeout=left), False
        except subprocess.TimeoutExpired:
            proc.kill()
            returncode, timed_out = proc.wait(), True
        results.append({"returncode": returncode, "timed_out": timed_out,
                        "seconds": round(time.perf_counter() - start, 1)})
    for fh in handles:
        fh.close()
    return results


# --------------------------------------------------------------------------- profile
def profile_step(impl: str, T: int, B: int, hidden: int, device: torch.device, warmup: int = 3) -> Dict:
    """Kernels launched, host synchronisations and the longest kernels of one
    training step (after ``warmup`` steps)."""
    from torch.profiler import ProfilerActivity, profile

    gen = torch.Generator().manual_seed(0)
    x = (torch.rand(T, B, compare.IN_FEATURES, generator=gen) < 0.05).float().to(device)
    y = torch.randint(0, compare.OUT_FEATURES, (B,), generator=gen).to(device)
    torch.manual_seed(0)
    model = compare.build(impl, hidden, track=False, device=device).to(device)
    loss_fn = nn.CrossEntropyLoss()

    def step():
        model.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()

    for _ in range(warmup):
        step()
    rec, launches = OpRecorder(), TritonLaunches()
    with launches, rec:
        step()
    syncs = rec.host_syncs
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.set_sync_debug_mode("warn")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            step()
            torch.cuda.set_sync_debug_mode("default")  # before the closing synchronisation
        syncs = sum("synchroniz" in str(w.message) for w in caught)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    events = prof.key_averages()
    if device.type == "cuda":
        kernels = [e for e in events if getattr(e, "device_time_total", 0) > 0 and e.device_type.name == "CUDA"]
        key = "device_time_total"
    else:
        kernels = [e for e in events if e.key.startswith("aten::")]
        key = "self_cpu_time_total"
    kernels.sort(key=lambda e: getattr(e, key), reverse=True)
    return {
        "impl": impl, "backend": compare.backend_of(impl, device), "T": T, "B": B, "hidden": hidden,
        # launches per training step: counted, on the GPU by the profiler
        "cuda_kernels": sum(e.count for e in kernels) if device.type == "cuda" else None,
        "triton_launches": launches.count,
        "aten_kernels": rec.kernels,
        "host_syncs": syncs,
        "top": [{"name": e.key[:80], "calls": e.count, "total_us": round(getattr(e, key), 1)}
                for e in kernels[:10]],
    }


def weight_grad_sides(in_f: int, out_f: int, *, T: int, B: int, device: torch.device,
                      active: float = 0.01, repeats: int = 5) -> Dict:
    """Both sides of the sparse weight gradient's size rule at one layer
    shape: the sparse kernel and the dense product, median ms, with ``active``
    of ``e``'s entries non-zero (about what LocalZO trains with)."""
    from snntorch_localzo._ops.linear_leaky import triton as sparse_kernels
    from snntorch_localzo._ops import planner
    from snntorch_localzo._ops.planner import Path as OpPath

    gen = torch.Generator().manual_seed(0)
    x = (torch.rand(T, B, in_f, generator=gen) < 0.05).float().to(device)
    e = (torch.randn(T, B, out_f, generator=gen) * (torch.rand(T, B, out_f, generator=gen) < active)).to(device)
    beta = torch.tensor(0.9, device=device)
    sides = {
        "sparse": lambda: sparse_kernels.sparse_weight_grad(x, e, beta, torch.float32),
        "dense": lambda: e.reshape(-1, out_f).t() @ x.reshape(-1, in_f),
    }
    timer = Timer(device)
    ms = {}
    for name, fn in sides.items():
        fn()  # compiled, warm
        times = []
        for _ in range(repeats):
            start = timer.start()
            fn()
            times.append(timer.stop(start))
        ms[name] = statistics.median(times)
    rule = "sparse" if planner.sparse_weight_grad_fits(OpPath.TRITON, out_f, in_f, T * B) else "dense"
    faster = min(ms, key=ms.get)
    return {"in": in_f, "out": out_f, "T": T, "B": B, "rows": T * B, "active": active,
            "sparse_ms": ms["sparse"], "dense_ms": ms["dense"], "rule": rule, "faster": faster,
            "rule_agrees": rule == faster}


def profile_phase(out_dir: Path, mode: str, device: torch.device) -> int:
    """Writes ``profile.json`` after every entry: the step profiles, then the
    weight-gradient rule's two sides."""
    cfg = MODES[mode]
    report = {"steps": [], "weight_grad_rule": []}
    path = out_dir / "profile.json"
    for impl in PROFILED:
        report["steps"].append(profile_step(impl, cfg["T"], cfg["B"], cfg["hidden"], device, cfg["warmup"]))
        compare.write_json(path, report)
    rule = cfg["rule"]
    for in_f, out_f in rule["shapes"]:
        for T in rule["T"]:
            report["weight_grad_rule"].append(
                weight_grad_sides(in_f, out_f, T=T, B=rule["B"], device=device,
                                  repeats=rule["repeats"]))
            compare.write_json(path, report)
    return 0


# --------------------------------------------------------------------------- driver
def _env(mode: str) -> Dict[str, str]:
    """The subprocesses' environment: on ``--selftest`` the kernels through
    Triton's interpreter, on CPU tensors (``use_backend('triton')``)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    if mode == "selftest":
        env.update(TRITON_INTERPRET="1", SNNTORCH_LOCALZO_BACKEND="triton", OMP_NUM_THREADS="1")
    return env


def _phase(name: str, out_dir: Path, mode: str, device: torch.device, env: Dict[str, str]) -> Dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--phase", name, "--out", str(out_dir),
           "--device", str(device), "--mode", mode]
    result = _bounded(cmd, MODES[mode]["limits"][name], env, out_dir / f"{name}.log")
    lines = [line for line in (out_dir / f"{name}.log").read_text().splitlines() if line.strip()]
    result["last_line"] = lines[-1][:300] if lines else ""  # the exception, when it failed
    return result


def run_compare(out_dir: Path, mode: str, device: torch.device, env: Dict[str, str]) -> List[Dict]:
    cfg = MODES[mode]
    limit = cfg["limits"]["compare"]
    results = []
    for hidden, steps in cfg["compare"]:
        stem = f"compare_h{hidden}"
        cmd = [sys.executable, str(ROOT / "benchmarks" / "compare.py"), "--device", str(device),
               "--T", *map(str, steps), "--hidden", str(hidden), "--out", str(out_dir / f"{stem}.json"),
               "--plot", str(out_dir / f"{stem}.png"), "--deadline", str(max(limit - 10, 1)),
               *cfg["compare_args"]]
        if device.type == "cuda":
            cmd.append("--energy")
        result = _bounded(cmd, limit, env, out_dir / f"{stem}.log")
        rows = json.loads((out_dir / f"{stem}.json").read_text()) if (out_dir / f"{stem}.json").exists() else []
        result.update(json=f"{stem}.json", rows=len(rows),
                      failed_rows=[f"{r['impl']} T={r['T']}: {r['error']}" for r in rows
                                   if r.get("error") and r["error"] != "not installed"])
        results.append(result)
    return results


def problems_of(report: Dict) -> List[str]:
    """Why the run is not a pass (empty: it is)."""
    out = list(report.get("preflight", []))
    for name in ("smoke", "profile"):
        phase = report.get(name)
        if phase is not None and (phase["returncode"] != 0 or phase["timed_out"]):
            why = "timed out" if phase["timed_out"] else f"exit {phase['returncode']}"
            last = f": {phase['last_line']}" if phase.get("last_line") else ""
            out.append(f"{name}: {why}{last} (see {name}.log)")
    tests = report.get("tests")
    if tests is not None and not tests["ok"]:
        out.append(f"tests: {tests['summary']} (see {tests['log']})")
    for step in report.get("profile_steps", []):
        if step["impl"].startswith("localzo") and step["host_syncs"]:
            out.append(f"profile: {step['impl']} synchronised with the host {step['host_syncs']} times")
    for result in report.get("compare", []):
        if result["timed_out"] or result["returncode"] != 0:
            out.append(f"compare {result['json']}: {'timed out' if result['timed_out'] else 'failed'}")
        out += [f"compare {result['json']}: {row}" for row in result["failed_rows"]]
    return out


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="folder for the JSONs, plots and logs")
    p.add_argument("--device", help="default: cuda where available (cpu with --selftest)")
    p.add_argument("--quick", action="store_true", help="the GPU tests and the T=100 rows (< 2 min)")
    p.add_argument("--selftest", action="store_true",
                   help="every phase on the CPU through Triton's interpreter at toy sizes")
    p.add_argument("--skip-tests", action="store_true", help="only profile and measure")
    p.add_argument("--phase", choices=("smoke", "profile"), help=argparse.SUPPRESS)
    p.add_argument("--mode", choices=tuple(MODES), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    mode = args.mode or ("selftest" if args.selftest else "quick" if args.quick else "full")
    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() and mode != "selftest" else "cpu"
    device = torch.device(args.device)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    if args.phase == "smoke":
        print(json.dumps(smoke(device)))
        return 0
    if args.phase == "profile":
        return profile_phase(out_dir, mode, device)

    report = {"mode": mode, "versions": versions(device)}
    path = out_dir / "gpu_check.json"
    print(json.dumps(report["versions"], indent=1), flush=True)
    env = _env(mode)
    report["preflight"] = missing_pieces(device)
    for line in report["preflight"]:
        print(f"MISSING {line}", flush=True)
    if any(line.startswith("CUDA is not available") for line in report["preflight"]):
        return _finish(report, path)  # nothing below can run
    # otherwise go on: the rows that do not need the missing piece still measure
    report["smoke"] = _phase("smoke", out_dir, mode, device, env)
    compare.write_json(path, report)
    if not args.skip_tests and importlib.util.find_spec("pytest") is not None:
        report["tests"] = run_tests(out_dir, MODES[mode]["tests"], MODES[mode]["limits"]["tests"], env)
        print(f"tests: {report['tests']['summary']} ({report['tests']['seconds']} s)", flush=True)
        compare.write_json(path, report)
    for stale in ["profile.json"] + [f"compare_h{h}.json" for h, _ in MODES[mode]["compare"]]:
        (out_dir / stale).unlink(missing_ok=True)  # an earlier run's results are not this run's
    report["profile"] = _phase("profile", out_dir, mode, device, env)
    if (out_dir / "profile.json").exists():
        measured = json.loads((out_dir / "profile.json").read_text())
        report["profile_steps"], report["weight_grad_rule"] = measured["steps"], measured["weight_grad_rule"]
    for step in report.get("profile_steps", []):
        kernels = step["cuda_kernels"] if step["cuda_kernels"] is not None else step["aten_kernels"]
        what = "CUDA kernels" if step["cuda_kernels"] is not None else "aten kernels"
        print(f"profile {step['impl']} ({step['backend']}): {kernels} {what}, "
              f"{step['triton_launches']} Triton launches, {step['host_syncs']} host syncs", flush=True)
    for side in report.get("weight_grad_rule", []):
        print(f"weight grad {side['in']}->{side['out']} rows {side['rows']}: sparse {side['sparse_ms']:.3f} ms, "
              f"dense {side['dense_ms']:.3f} ms, rule {side['rule']}, faster {side['faster']}", flush=True)
    compare.write_json(path, report)
    report["compare"] = run_compare(out_dir, mode, device, env)
    return _finish(report, path)


def _finish(report: Dict, path: Path) -> int:
    report["problems"] = problems_of(report)
    compare.write_json(path, report)
    for line in report["problems"]:
        print(f"PROBLEM {line}", flush=True)
    print(f"wrote {path}: {'pass' if not report['problems'] else 'FAIL'}", flush=True)
    return 0 if not report["problems"] else 1


if __name__ == "__main__":
    sys.exit(main())
