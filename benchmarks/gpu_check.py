"""One command that validates and measures the GPU path on a machine with a GPU.

    python benchmarks/gpu_check.py --out DIR

1. prints the versions (Python, torch, Triton, CUDA, driver, GPU, snnTorch);
2. runs the GPU tests and every op and neuron test on CUDA (pytest: the
   kernels against the reference at realistic sizes and in every dtype, on an
   explicit device index, reproducibly, no host synchronisation);
3. profiles one training step of the benchmark network (700-256-256-20,
   T = 100, B = 128) for snnTorch + ATan, the dense and the sparse
   ``LinearLeaky`` stacks: CUDA kernels launched, host synchronisations
   (``torch.cuda.set_sync_debug_mode("warn")``), the ten longest kernels;
4. runs ``benchmarks/compare.py`` at T = 100 and 500 for hidden 256 and 1024
   (SpikingJelly 2.0 included when installed) with the energy of one
   training step from the GPU's counter (``--energy``);
5. writes ``gpu_check.json``, the two compare JSONs and plots and the test
   log into DIR.

``--quick`` runs small sizes (a smoke run; also on the CPU, for testing this
script). See the README's performance section for installing the package on
a GPU machine without network access.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Dict, List

import torch
import torch.nn as nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import compare  # noqa: E402

TEST_FILES = ["tests/test_gpu.py", "tests/test_no_sync.py", "tests/test_op_spike_and_step.py",
              "tests/test_sequence.py", "tests/test_neuron_leaky.py", "tests/test_determinism.py",
              "tests/test_special_values.py"]


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
    if device.type == "cuda":
        info["capability"] = ".".join(map(str, torch.cuda.get_device_capability(device)))
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=30)
            info["driver"] = out.stdout.strip().splitlines()[0]
        except Exception:
            info["driver"] = "unknown"
    return info


def run_tests(out_dir: Path, quick: bool) -> Dict:
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x" if quick else "-q",
           *TEST_FILES]
    start = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    log = out_dir / "gpu_tests.log"
    log.write_text(out.stdout + out.stderr)
    lines = [line for line in out.stdout.splitlines() if line.strip()]
    return {"returncode": out.returncode, "summary": lines[-1] if lines else "",
            "seconds": round(time.perf_counter() - start, 1), "log": log.name}


def profile_step(impl: str, T: int, B: int, hidden: int, device: torch.device) -> Dict:
    """Kernels, synchronisations and the longest kernels of one training step."""
    from torch.profiler import ProfilerActivity, profile

    gen = torch.Generator().manual_seed(0)
    x = (torch.rand(T, B, compare.IN_FEATURES, generator=gen) < 0.05).float().to(device)
    y = torch.randint(0, compare.OUT_FEATURES, (B,), generator=gen).to(device)
    torch.manual_seed(0)
    model = compare.build(impl, hidden, track=False).to(device)
    loss_fn = nn.CrossEntropyLoss()

    def step():
        model.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()

    for _ in range(3):
        step()
    syncs = None
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.set_sync_debug_mode("warn")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            step()
        torch.cuda.set_sync_debug_mode("default")
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
        "impl": impl, "T": T, "B": B, "hidden": hidden,
        "kernels": sum(e.count for e in kernels),
        "host_syncs": syncs,
        "top": [{"name": e.key[:80], "calls": e.count, "total_us": round(getattr(e, key), 1)}
                for e in kernels[:10]],
    }


def main(argv: List[str] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="folder for the JSON, plots and the test log")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--quick", action="store_true", help="small sizes: a smoke run of this script")
    p.add_argument("--skip-tests", action="store_true", help="only profile and measure")
    args = p.parse_args(argv)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = torch.device(args.device)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    report = {"versions": versions(device)}
    print(json.dumps(report["versions"], indent=1), flush=True)
    if not args.skip_tests:
        report["tests"] = run_tests(out_dir, args.quick)
        print(f"tests: {report['tests']['summary']} ({report['tests']['seconds']} s)", flush=True)
    T, B, hidden = (8, 8, 32) if args.quick else (100, 128, 256)
    report["profile"] = [profile_step(impl, T, B, hidden, device)
                         for impl in ("snntorch_atan", "localzo_dense", "localzo_sparse")]
    for prof in report["profile"]:
        print(f"profile {prof['impl']}: {prof['kernels']} kernels, {prof['host_syncs']} host syncs",
              flush=True)
    report["compare"] = []
    sizes = [(256, [8]), (1024, [8])] if args.quick else [(256, [100, 500]), (1024, [100, 500])]
    for hidden, steps in sizes:
        stem = f"compare_h{hidden}"
        cargs = ["--device", str(device), "--T", *map(str, steps), "--hidden", str(hidden),
                 "--out", str(out_dir / f"{stem}.json"), "--plot", str(out_dir / f"{stem}.png")]
        if args.quick:
            cargs += ["--batch", "8", "--repeats", "1", "--warmup", "1"]
        if device.type == "cuda":
            cargs.append("--energy")
        compare.main(cargs)
        report["compare"].append(f"{stem}.json")
    (out_dir / "gpu_check.json").write_text(json.dumps(report, indent=1))
    print(f"wrote {out_dir / 'gpu_check.json'}")
    return 0 if report.get("tests", {"returncode": 0})["returncode"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
