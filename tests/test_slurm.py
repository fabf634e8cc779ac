"""SLURM: the profiles parse, and a real SLURM run of the smoke sweep.

``test_slurm_profile_resources_grow_with_attempt`` and ``test_local_profile_parses`` dry-run the
workflow with each profile (no cluster needed).

``test_smoke_workflow_on_slurm`` (marker ``slurm``): scripts/slurm/start.sh brings up a one-node
cluster (Debian packages munge, slurmctld, slurmd; no accounting database: the profile polls with
squeue), then ``snakemake --profile profiles/slurm smoke`` runs in a copy of the Snakefile,
config/ and profiles/ in a temporary folder, with CI-only overrides on top of the profile: the
smoke sweep restricted to BC (``CMIL_BENCH_SLURM_ALGOS=bc,cmil`` or ``all`` for more; all five on
this 2-core machine took 268 s), no retries (a failure shows at once), and the first status check
after 12 s instead of 40 s. Every subprocess has a hard timeout, so CI cannot hang. It checks
that each run recorded its SLURM job id (from SLURM_JOB_ID) in config.json, that SLURM ran that
job to completion, that every run wrote its metrics.csv and that the report was made. The
cluster is stopped at the end, unless it was already up before the test.

Skipped (with the reason) when: CMIL_BENCH_SKIP_SLURM=1, not root, neither SLURM nor apt-get is
there, or start.sh cannot install the packages or bring the daemons up.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
START, STOP = REPO / "scripts" / "slurm" / "start.sh", REPO / "scripts" / "slurm" / "stop.sh"
START_TIMEOUT = 600      # the first start installs packages
WORKFLOW_TIMEOUT = 420   # the smoke sweep on one 2-core node takes about 2 minutes
# Seconds to the first status check (the profile says 40). The plugin then waits 10 s longer
# each time no job has finished, so checks come 12, 34, 66 s after a submission: a smoke job
# (10 s on an idle machine, up to 30 s on a busy one, most of it starting snakemake inside the
# job) is seen after 12 or 34 s.
STATUS_EVERY = 12


def _cluster_up() -> bool:
    if shutil.which("scontrol") is None:
        return False
    try:
        return subprocess.run(["scontrol", "ping"], capture_output=True, text=True,
                              timeout=20).stdout.count("UP") > 0
    except (OSError, subprocess.SubprocessError):
        return False


@pytest.fixture(scope="module")
def slurm_cluster():
    if os.environ.get("CMIL_BENCH_SKIP_SLURM") == "1":
        pytest.skip("CMIL_BENCH_SKIP_SLURM=1")
    if os.geteuid() != 0:
        pytest.skip("scripts/slurm/start.sh needs root to install and start the SLURM daemons")
    if shutil.which("slurmctld") is None and shutil.which("apt-get") is None:
        pytest.skip("no SLURM installed and no apt-get to install it")
    was_up = _cluster_up()
    t0 = time.monotonic()
    try:
        proc = subprocess.run(["bash", str(START)], capture_output=True, text=True,
                              timeout=START_TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.skip(f"scripts/slurm/start.sh did not finish within {START_TIMEOUT} s")
    if proc.returncode != 0:
        pytest.skip(f"scripts/slurm/start.sh failed with status {proc.returncode}: "
                    f"{(proc.stderr or proc.stdout).strip()[-800:]}")
    print(f"\n[slurm] cluster ready in {time.monotonic() - t0:.1f} s")
    yield
    if not was_up:
        subprocess.run(["bash", str(STOP)], capture_output=True, text=True, timeout=120)


def _smoke_algorithms() -> list[str]:
    """The smoke sweep's algorithms that exist here and that CMIL_BENCH_SLURM_ALGOS asks for."""
    import yaml

    from algorithms import available

    cfg = yaml.safe_load((REPO / "config" / "default.yaml").read_text())
    wanted = os.environ.get("CMIL_BENCH_SLURM_ALGOS", "bc").replace(" ", "")
    algos = [a for a in cfg["smoke"]["algos"]
             if (cfg.get("variants", {}).get(a, {}).get("algo", a)) in available()]
    if wanted != "all":
        algos = [a for a in algos if a in wanted.split(",")]
    return algos


def _run_workflow(cmd: list[str], cwd: Path, log: Path) -> tuple[int, float]:
    """Run snakemake with a hard timeout; on timeout interrupt it (it cancels its SLURM jobs)."""
    t0 = time.monotonic()
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=f, stderr=subprocess.STDOUT,
                                start_new_session=True,
                                env={**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")})
        try:
            rc = proc.wait(timeout=WORKFLOW_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            pytest.fail(f"snakemake did not finish within {WORKFLOW_TIMEOUT} s; log:\n"
                        + log.read_text()[-4000:])
    return rc, time.monotonic() - t0


def _job_state(job_id: str) -> str:
    out = subprocess.run(["squeue", "--states=all", "-h", "-j", job_id, "-o", "%T"],
                         capture_output=True, text=True, timeout=20).stdout.strip()
    return out


def _dry_run_resources(work: Path, args: list[str]) -> dict[str, dict[str, str]]:
    """``snakemake -n ARGS`` in ``work``: rule name -> its resources as printed."""
    proc = subprocess.run(["snakemake", "-n", *args], cwd=work, capture_output=True, text=True,
                          timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out, rule = {}, None
    for line in proc.stdout.splitlines():
        line = line.strip()
        if line.startswith("rule ") and line.endswith(":"):
            rule = line[5:-1]
        elif line.startswith("resources:") and rule:
            out[rule] = dict(kv.split("=", 1) for kv in line[len("resources:"):].split(", "))
    return out


@pytest.mark.slow
def test_slurm_profile_resources_grow_with_attempt(workflow_copy):
    """The profile parses, and a retried job asks for more (runtime and memory x attempt)."""
    work = workflow_copy
    args = ["--profile", "profiles/slurm", "smoke", "--config", 'smoke={"algos": ["bc"]}']
    first = _dry_run_resources(work, args)
    third = _dry_run_resources(work, args + ["--attempt", "3"])
    for rule in ("demos", "report"):
        for key in ("runtime", "mem_mb"):
            assert int(third[rule][key]) == 3 * int(first[rule][key]), (rule, key)
    # run: from config `resources:` (per algorithm), through the Snakefile
    assert first["run"]["cpus_per_task"] == "1" and first["run"]["gpu"] == "0"
    assert int(first["run"]["mem_mb"]) > 0 and int(first["run"]["runtime"]) > 0


@pytest.mark.slow
def test_local_profile_parses(workflow_copy):
    work = workflow_copy
    res = _dry_run_resources(work, ["--profile", "profiles/local", "smoke",
                                    "--config", 'smoke={"algos": ["bc"]}'])
    assert set(res) >= {"demos", "run", "report"}
    assert res["run"]["gpu"] == "0" and int(res["run"]["mem_mb"]) > 0


@pytest.mark.slurm
@pytest.mark.slow
# its own limits: the cluster start (installs packages the first time), the workflow, the stop
@pytest.mark.timeout(START_TIMEOUT + WORKFLOW_TIMEOUT + 180)
def test_smoke_workflow_on_slurm(slurm_cluster, workflow_copy, tmp_path):
    algos = _smoke_algorithms()
    assert algos, "no smoke algorithm exists in this checkout"
    work = workflow_copy
    cmd = ["snakemake", "--profile", "profiles/slurm", "smoke",
           "--config", "smoke=" + json.dumps({"algos": algos}),
           "--retries", "0",
           "--slurm-init-seconds-before-status-checks", str(STATUS_EVERY),
           "--seconds-between-status-checks", str(STATUS_EVERY)]
    log = tmp_path / "snakemake.log"
    rc, seconds = _run_workflow(cmd, work, log)
    print(f"[slurm] snakemake --profile profiles/slurm smoke ({len(algos)} algorithms): "
          f"{seconds:.1f} s, exit status {rc}")
    if rc != 0:
        job_logs = "\n".join(f"--- {p}\n{p.read_text()[-1500:]}"
                             for p in sorted((work / "results" / "smoke" / "logs").rglob("*.log")))
        pytest.fail(f"snakemake failed (exit {rc}); log:\n{log.read_text()[-4000:]}\n{job_logs}")

    runs = sorted((work / "results" / "smoke" / "runs").glob("*/*/d*/s*"))
    variants = {p.relative_to(work / "results" / "smoke" / "runs").parts[0] for p in runs}
    assert variants == set(algos)
    job_ids = set()
    for run in runs:
        assert (run / "metrics.csv").is_file(), f"{run} has no metrics.csv"
        record = json.loads((run / "config.json").read_text())
        job_id = record.get("slurm_job_id")
        assert job_id and str(job_id).isdigit(), f"{run}: no SLURM job id in config.json"
        assert _job_state(str(job_id)) == "COMPLETED", f"SLURM job {job_id} of {run}"
        job_ids.add(job_id)
    assert len(job_ids) == len(runs), "each run is its own SLURM job"
    assert (work / "results" / "smoke" / "report" / "summary.json").is_file()

