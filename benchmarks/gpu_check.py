"""The GPU check of the world-model methods (issue 19), one JSON file; run by gpu_check.sh.

    python benchmarks/gpu_check.py --out gpu_check.json [--device auto|cuda|cpu] [--budget 270]
        [--no-compile]

On a CUDA device: (1) short runs through the CLI with ``--set device=cuda`` and the ``smoke``
preset, on 2 expert demos collected locally first: CMIL from states (pointmaze-umaze) and from
pixels (fetch-push-pixels), V-MAIL from states; (2) full latent-agent updates per second (CMIL,
``train_step`` on fixed synthetic batches, benchmarks/time_update.py's ``build``) at the
reference sizes (the Config defaults: RSSM 400/360/400, 10 heads, batch 32 x 50, horizon 15),
states and 64x64 pixels, with and without each speed switch (``amp_bf16``, ``compile``, both),
and the peak device memory of each. Without a GPU it runs the same steps on the CPU at tiny
sizes (the ``smoke`` preset) and writes the same layout with ``"device": "cpu"``.

Every step runs in a child process of its own (a clean peak-memory figure; a crash or a
time-out costs only that entry) with at most the time left of ``--budget``; once the budget is
spent the remaining steps are recorded as skipped, so the check ends within the budget.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SWITCHES = [{"amp_bf16": False, "compile": False}, {"amp_bf16": True, "compile": False},
            {"amp_bf16": False, "compile": True}, {"amp_bf16": True, "compile": True}]
RUN_TASKS = [("cmil", "states", "pointmaze-umaze"), ("cmil", "pixels", "fetch-push-pixels"),
             ("vmail", "states", "pointmaze-umaze")]


# ------------------------------------------------------------------------------ child steps
def _peaks(device: str) -> dict:
    import torch

    out = {"peak_host_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if device.startswith("cuda"):
        out["peak_device_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def child_rate(job: dict) -> dict:
    """Updates per second of one (input, switches) setting."""
    import torch

    sys.path.insert(0, str(HERE))
    from time_update import build

    torch.set_num_threads(job["threads"])
    dev = job["device"]
    spec = {"algo": "cmil", "sizes": job["sizes"], "pixels": job["input"] == "pixels", "obs_dim": 25,
            "act_dim": 4, "set": job["switches"], "device": dev}
    t0 = time.perf_counter()
    agent, step, _ = build(spec)
    sync = torch.cuda.synchronize if dev.startswith("cuda") else (lambda: None)
    for _ in range(job["warmup"]):  # torch.compile compiles here
        step()
    sync()
    warm_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(job["updates"]):
        step()
    sync()
    dt = time.perf_counter() - t0
    return {"updates_per_s": job["updates"] / dt, "updates": job["updates"], "build_and_warmup_s": warm_s,
            "params": sum(p.numel() for p in agent.parameters()), **_peaks(dev)}


def child_run(job: dict) -> dict:
    """A short run of ``job["algo"]`` through the CLI on the device; its final metrics row."""
    import pandas as pd

    from cmil_bench.cli import main
    from envs.collect import collect_demos

    root = Path(job["tmp"]) / "minari"
    os.environ["MINARI_DATASETS_PATH"] = str(root)
    collect_demos(job["task"].removesuffix("-pixels"), 2, seed=0, root=str(root), random_episodes=1,
                  pixels=job["input"] == "pixels", overwrite=True)
    out = Path(job["tmp"]) / f"run-{job['algo']}-{job['input']}"
    argv = ["run", "--algo", job["algo"], "--task", job["task"], "--demos", "2", "--seed", "0",
            "--out", str(out), "--preset", "smoke", "--set", f"device={job['device']}", "--progress", "off"]
    t0 = time.perf_counter()
    rc = main(argv)
    wall = time.perf_counter() - t0
    if rc != 0:
        return {"ok": False, "error": f"cmil-bench run exited {rc}"}
    df = pd.read_csv(out / "metrics.csv")
    cfg = json.loads((out / "config.json").read_text())
    last = df.iloc[-1]
    return {"ok": True, "wall_s": wall, "env_steps": int(last["env_steps"]),
            "grad_steps": int(last["grad_steps"]),
            "norm_score": float(last["norm_score"]), "wm_loss": float(last["wm_loss"]),
            "run_device": cfg.get("device"), **_peaks(job["device"])}


# ------------------------------------------------------------------------------ the parent
def spawn(job: dict, limit: float) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT), MUJOCO_GL=os.environ.get("MUJOCO_GL", "egl"))
    t0 = time.perf_counter()
    try:
        res = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(job)],
                             cwd=ROOT, env=env, capture_output=True, text=True, timeout=max(limit, 1))
    except subprocess.TimeoutExpired:
        return {"ok": False, "error": f"timed out after {limit:.0f} s"}
    lines = [line for line in res.stdout.splitlines() if line.startswith("{")]
    if res.returncode != 0 or not lines:
        tail = (res.stderr.strip().splitlines() or ["no output"])[-1]
        return {"ok": False, "error": f"exit {res.returncode}: {tail[:300]}"}
    out = json.loads(lines[-1])
    out.setdefault("ok", True)
    out["step_s"] = time.perf_counter() - t0
    return out


def resolve(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        print(f"gpu_check: device {device!r} asked for, but torch sees no CUDA device", file=sys.stderr)
        raise SystemExit(2)
    return device


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="gpu_check.json")
    ap.add_argument("--device", default="auto", help="auto (cuda when there is one), cuda, cuda:N or cpu")
    ap.add_argument("--budget", type=float, default=270.0,
                    help="seconds before the remaining steps are skipped")
    ap.add_argument("--step-limit", type=float, default=150.0, help="seconds one step may take")
    ap.add_argument("--no-compile", action="store_true",
                    help="skip the compile settings (recorded as skipped)")
    args = ap.parse_args(argv)
    device = resolve(args.device)
    import torch

    gpu = device.startswith("cuda")
    sizes = "reference" if gpu else "smoke"
    report = {"device": "cuda" if gpu else "cpu", "device_name": torch.cuda.get_device_name(device) if gpu
              else platform.processor() or platform.machine(),
              "torch": torch.__version__, "sizes": sizes, "host": platform.node(),
              "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "runs": [], "updates": []}
    start = time.perf_counter()

    def left() -> float:
        return args.budget - (time.perf_counter() - start)

    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        for algo, kind, task in RUN_TASKS:
            entry = {"algo": algo, "input": kind, "task": task}
            job = {"mode": "run", "algo": algo, "input": kind, "task": task, "device": device, "tmp": tmp}
            entry.update(spawn(job, min(args.step_limit, left())) if left() > 5 else
                         {"ok": False, "skipped": "time budget spent"})
            report["runs"].append(entry)
            print(json.dumps(entry), flush=True)
        # plain and bf16 settings first: compile settings are the slowest to start
        order = sorted(SWITCHES, key=lambda s: s["compile"])
        for switches in order:
            for kind in ("states", "pixels"):
                entry = {"input": kind, **switches}
                if switches["compile"] and args.no_compile:
                    entry.update(ok=False, skipped="--no-compile")
                elif left() <= 5:
                    entry.update(ok=False, skipped="time budget spent")
                else:
                    job = {"mode": "rate", "input": kind, "switches": switches, "device": device,
                           "sizes": sizes, "threads": 1 if not gpu else 4,
                           "warmup": 3, "updates": 10 if gpu or kind == "states" else 3}
                    entry.update(spawn(job, min(args.step_limit, left())))
                report["updates"].append(entry)
                print(json.dumps(entry), flush=True)
    report["elapsed_s"] = time.perf_counter() - start
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    print(f"gpu_check: wrote {args.out} ({report['elapsed_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        job = json.loads(sys.argv[2])
        print(json.dumps(child_run(job) if job["mode"] == "run" else child_rate(job)), flush=True)
    else:
        sys.exit(main())
