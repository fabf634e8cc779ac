"""Updates per second of the latent agent (world model + discriminator + imagination
actor-critic), for the current code and a named git revision, side by side in one run.

    python benchmarks/time_update.py --rev cdd7d8e [--algo cmil|vmail] [--sizes cpu|reference]
        [--pixels] [--set KEY=VALUE ...] [--set-current KEY=VALUE ...]
        [--updates 10] [--repeats 6] [--threads 1]

Each tree (the working tree this script lives in, and ``--rev`` checked out into a temporary
``git worktree``) gets a driver process of its own: this file, run with ``PYTHONPATH`` pointing
at that tree, so each imports its own ``algorithms`` and ``cmil_bench``. A driver builds the
algorithm's agent at the given sizes (``cpu``: the algorithm's ``cpu`` preset; ``reference``:
its Config defaults; ``--set`` on top), makes a few fixed-seed synthetic batches (random states
or 64x64 frames, random actions; the replay's sampling is not timed), warms up, and then waits.
The parent asks the drivers in turn (old, new, old, new, ...) for ``--updates`` timed calls of
``train_step(replay_batch, expert_batch)``, so that load drift on a shared machine hits both
alike. It prints, per tree, the median updates per second of wall time and per CPU-second of
the driver (with the range over repeats), and the ratio current / revision.

The driver adapts to both agent APIs the project has had: ``algorithms/latent_agent.py``
(``LatentAgent``; CMIL's ``cmil.Agent``; ``Config.total_steps``) and the older
``algorithms/actor_critic.py`` (``LatentAgent`` with CMIL's terms built in; ``Config.env_steps``,
``act``, ``disc_act``, ...). ``--rev`` may also be ``HEAD``: the committed code against the
working tree.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Config names that changed (new -> old); the driver tries both spellings.
RENAMED = {"total_steps": "env_steps", "activation": "act", "disc_activation": "disc_act",
           "gp_weight": "disc_gp", "replay_size": "replay_capacity", "adam_eps": "opt_eps",
           "discount": "gamma", "grad_clip": "max_grad_norm"}


def fail(msg: str):
    """Bad input: one line on stderr, exit status 2."""
    print(f"time_update: {msg}", file=sys.stderr)
    raise SystemExit(2)


# ------------------------------------------------------------------------------- the driver
def build(spec: dict):
    """In the tree on ``sys.path``: the agent that ``spec`` asks for (on ``spec["device"]``,
    default cpu) and a function that runs one update on the next of a few fixed-seed batches.
    Returns ``(agent, step, api)``; benchmarks/gpu_check.py uses it too."""
    import dataclasses

    import numpy as np
    import torch

    torch.manual_seed(0)
    algo = __import__(f"algorithms.{spec['algo']}", fromlist=["Config"])
    cfg_cls = algo.Config
    names = {f.name for f in dataclasses.fields(cfg_cls)}
    back = {v: k for k, v in RENAMED.items()}

    def key(k: str) -> str | None:
        for cand in (k, RENAMED.get(k), back.get(k)):
            if cand in names:
                return cand
        return None

    values = {}
    if spec["sizes"] != "reference":  # a preset's sizes (else the Config defaults)
        values.update(algo.PRESETS[spec["sizes"]])
    values.update(spec["set"])
    kwargs = {}
    for k, v in values.items():
        kk = key(k)
        if kk is None:
            if k in spec["set"]:
                fail(f"{spec['algo']}.Config has no field {k!r}")
            continue  # a preset entry this tree's Config does not know
        typ = type(getattr(cfg_cls(), kk))
        kwargs[kk] = tuple(v) if typ is tuple else typ(v)
    cfg = cfg_cls(**kwargs)

    try:  # the current API
        from algorithms.latent_agent import LatentAgent
        agent_cls = getattr(algo, "Agent", LatentAgent)
        api = "latent_agent"
    except ImportError:  # before the latent agent was split out (e.g. cdd7d8e)
        from algorithms.actor_critic import LatentAgent as agent_cls
        api = "actor_critic"

    obs_shape = (64, 64, 3) if spec["pixels"] else (spec["obs_dim"],)
    act_dim = spec["act_dim"]
    agent = agent_cls(obs_shape, act_dim, cfg).to(spec.get("device", "cpu"))
    rng = np.random.default_rng(0)

    def batch(n: int) -> dict:
        b, length = n, cfg.seq_len
        if spec["pixels"]:
            obs = rng.integers(0, 256, size=(b, length, *obs_shape), dtype=np.uint8)
        else:
            obs = rng.normal(size=(b, length, *obs_shape)).astype(np.float32)
        action = rng.uniform(-1, 1, size=(b, length, act_dim)).astype(np.float32)
        action[:, 0] = 0.0
        first = np.zeros((b, length), bool)
        first[:, 0] = True
        return {"obs": obs, "action": action, "is_first": first}

    batches = [(batch(cfg.batch_size), batch(cfg.expert_batch_size)) for _ in range(4)]
    done = 0

    def step() -> None:
        nonlocal done
        b, e = batches[done % len(batches)]
        agent.train_step(b, e)
        done += 1

    return agent, step, api


def _driver(spec: dict) -> None:
    """Runs inside one tree: build the agent, then answer ``run N`` lines with timings."""
    import torch

    torch.set_num_threads(spec["threads"])
    agent, step, api = build(spec)
    for _ in range(spec["warmup"]):
        step()
    n_params = sum(p.numel() for p in agent.parameters())
    print(json.dumps({"ready": True, "api": api, "params": n_params}), flush=True)
    for line in sys.stdin:
        n = int(line.split()[1])
        w0, c0 = time.perf_counter(), time.process_time()
        for _ in range(n):
            step()
        w, c = time.perf_counter() - w0, time.process_time() - c0
        print(json.dumps({"wall": w, "cpu": c, "n": n}), flush=True)


# ------------------------------------------------------------------------------- the parent
class Driver:
    def __init__(self, name: str, tree: Path, spec: dict):
        env = dict(os.environ, PYTHONPATH=str(tree), MUJOCO_GL=os.environ.get("MUJOCO_GL", "egl"))
        self.name = name
        self.proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--driver",
                                      json.dumps(spec)], cwd=tree, env=env, text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.info = self._read()
        self.wall: list[float] = []
        self.cpu: list[float] = []

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            fail(f"the driver for {self.name} stopped (see its error above)")
        return json.loads(line)

    def run(self, n: int) -> None:
        self.proc.stdin.write(f"run {n}\n")
        self.proc.stdin.flush()
        r = self._read()
        self.wall.append(r["n"] / r["wall"])
        self.cpu.append(r["n"] / max(r["cpu"], 1e-9))

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def checkout(rev: str, where: Path) -> Path:
    tree = where / "rev"
    res = subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), rev],
                         capture_output=True, text=True)
    if res.returncode != 0:
        fail(f"cannot check out {rev!r}: {res.stderr.strip().splitlines()[-1]}")
    return tree


def parse_set(items: list[str]) -> dict:
    """KEY=VALUE pairs: Python literals (``128``, ``3e-4``, ``128,128`` for a tuple), else strings."""
    out = {}
    for item in items:
        k, sep, v = item.partition("=")
        if not sep:
            fail(f"--set takes KEY=VALUE, got {item!r}")
        try:
            out[k.strip()] = ast.literal_eval(v.strip())
        except (ValueError, SyntaxError):
            out[k.strip()] = v.strip()
    return out


def fmt(xs: list[float]) -> str:
    return f"{statistics.median(xs):.2f} [{min(xs):.2f}-{max(xs):.2f}]"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rev", default="cdd7d8e",
                    help="git revision to compare with (HEAD: the committed code)")
    ap.add_argument("--algo", default="cmil", choices=("cmil", "vmail"))
    ap.add_argument("--sizes", default="cpu", choices=("cpu", "reference", "smoke"),
                    help="cpu or smoke: that preset's sizes; reference: the Config defaults")
    ap.add_argument("--pixels", action="store_true", help="64x64x3 frames instead of states")
    ap.add_argument("--obs-dim", type=int, default=25, help="state size (fetch-push: 25)")
    ap.add_argument("--act-dim", type=int, default=4)
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="Config fields on top")
    ap.add_argument("--set-current", nargs="*", default=[], metavar="KEY=VALUE",
                    help="Config fields for the current code only (switches the revision lacks)")
    ap.add_argument("--updates", type=int, default=10, help="updates per timed repeat")
    ap.add_argument("--repeats", type=int, default=6, help="timed repeats per tree, alternating")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="torch threads per driver")
    args = ap.parse_args(argv)
    spec = {"algo": args.algo, "sizes": args.sizes, "pixels": args.pixels, "obs_dim": args.obs_dim,
            "act_dim": args.act_dim, "set": parse_set(args.set), "warmup": args.warmup,
            "threads": args.threads}
    spec_new = dict(spec, set={**spec["set"], **parse_set(args.set_current)})
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()
    current = f"{head}{'+' if dirty else ''} (working tree)"
    with tempfile.TemporaryDirectory(prefix="time_update_") as tmp:
        tree = checkout(args.rev, Path(tmp))
        try:
            old = Driver(args.rev, tree, spec)
            new = Driver(current, ROOT, spec_new)
            for _ in range(args.repeats):
                old.run(args.updates)
                new.run(args.updates)
            old.close(), new.close()
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)],
                           capture_output=True)
    kind = "pixels 64x64" if args.pixels else f"states ({args.obs_dim}-d)"
    extra = f" + {' '.join(args.set)}" if args.set else ""
    extra += f" (current code also {' '.join(args.set_current)})" if args.set_current else ""
    print(f"{args.algo}, {args.sizes} sizes{extra}, {kind}, "
          f"{args.threads} thread(s); {args.repeats} alternating repeats of {args.updates} updates")
    print("| code | api | parameters | updates/s (wall) median [range] | updates per CPU-s |")
    print("|---|---|---|---|---|")
    for d in (old, new):
        print(f"| {d.name} | {d.info['api']} | {d.info['params']} | {fmt(d.wall)} | {fmt(d.cpu)} |")
    ratio_w = statistics.median(new.wall) / statistics.median(old.wall)
    ratio_c = statistics.median(new.cpu) / statistics.median(old.cpu)
    print(f"ratio current / {args.rev}: {ratio_w:.2f}x (wall), {ratio_c:.2f}x (CPU)")
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--driver":
        _driver(json.loads(sys.argv[2]))
    else:
        sys.exit(main())
