# cmil-bench sweeps: algorithm x task x demo count x seed -> metrics.csv -> rliable report.
#
#   snakemake --cores 2 all         the sweep of config/default.yaml, ends in results/report/
#   snakemake --cores 2 smoke       every algorithm for a few seconds (results/smoke/)
#   snakemake --cores 2 ablation    CMIL's conservatism switches (results/ablation/)
#   snakemake --profile profiles/slurm all     the same on a SLURM cluster
#
# Everything (algorithms, tasks, demo counts, seeds, presets, matched budgets, per-task settings,
# resources) comes from the config, checked against config/schema.yaml before planning;
# `snakemake all --configfile config/paper.yaml` switches to the paper's settings.

import os
import re
import shlex
import sys

# Planning imports only light modules (no gymnasium, MuJoCo, torch or minari): a dry run needs no
# simulator. cmil_bench/sweep.py checks the config and builds each run's arguments.
from cmil_bench import sweep
from envs import catalog
from envs.catalog import task_entry

configfile: "config/default.yaml"

# The merged config (default.yaml, --configfile, --config) against config/schema.yaml, and the
# names in it, before any job is planned: one line naming the key, exit status 2.
try:
    config.update(sweep.check(config, os.path.join(workflow.basedir, "config", "schema.yaml")))
except sweep.SweepConfigError as e:
    print(f"sweep config: {e}", file=sys.stderr)
    sys.exit(2)

# Tasks the config defines (task_definitions:, checked above) join the built-in ones for planning;
# the runs read them from {root}/task_definitions.yaml (rule task_definitions).
TASK_DEFS = dict(config.get("task_definitions") or {})
catalog.add_definitions(TASK_DEFS)

RES = str(config.get("results", "results")).rstrip("/")
SWEEPS = {"main": RES, "smoke": f"{RES}/smoke", "ablation": f"{RES}/ablation"}
SECTIONS = sweep.sections(config)
TABLES = sweep.run_tables(config)
ROOT_TO_SWEEP = {v: k for k, v in SWEEPS.items()}


def run_dirs(name):
    sec, out = SECTIONS[name], []
    for variant, spec in TABLES[name].items():
        for task in sec["tasks"]:
            for d in spec["demos"]:
                for s in sec["seeds"]:
                    out.append(f"{SWEEPS[name]}/runs/{variant}/{task}/d{d}/s{s}")
    return out


def _task_has_expert(task):
    return task_entry(task).has_expert


def _spec(wc):
    name = ROOT_TO_SWEEP[wc.root]
    table = TABLES[name]
    if wc.variant not in table:
        raise ValueError(f"variant {wc.variant!r} is not part of the {name} sweep")
    return name, table[wc.variant]


def _resources(wc, key):
    _, spec = _spec(wc)
    res = config.get("resources", {}) or {}
    merged = dict(res.get("default", {}) or {})
    merged.update(res.get(spec["algo"], {}) or {})
    merged.update(res.get(wc.variant, {}) or {})
    return merged.get(key)


wildcard_constraints:
    root="|".join(re.escape(r) for r in sorted(SWEEPS.values(), key=len, reverse=True)),
    variant=r"[^/]+",
    family=r"[^/]+",
    task=r"[^/]+",
    demos=r"\d+",
    seed=r"\d+",


# The targets also name every run's metrics.csv: Snakemake does not remake a missing intermediate
# file when the files after it exist, so a deleted run folder would otherwise leave the report
# stale; named here, the run is redone and the (now older) manifest and report follow.
rule all:
    input:
        f"{RES}/report/summary.json",
        [f"{d}/metrics.csv" for d in run_dirs("main")],


rule smoke:
    input:
        f"{SWEEPS['smoke']}/report/summary.json",
        [f"{d}/metrics.csv" for d in run_dirs("smoke")],


rule ablation:
    input:
        f"{SWEEPS['ablation']}/report/summary.json",
        f"{SWEEPS['ablation']}/report/ablation.png",
        [f"{d}/metrics.csv" for d in run_dirs("ablation")],


def _defs_input(wc):
    return [f"{wc.root}/task_definitions.yaml"] if TASK_DEFS else []


def _defs_arg(wc):
    return f"--tasks {shlex.quote(wc.root + '/task_definitions.yaml')}" if TASK_DEFS else ""


rule task_definitions:
    """The config's task_definitions, for the --tasks of its runs and demos."""
    output:
        "{root}/task_definitions.yaml",
    params:
        defs=lambda wc: TASK_DEFS,
    run:
        import yaml

        os.makedirs(os.path.dirname(output[0]), exist_ok=True)
        with open(output[0], "w") as f:
            yaml.safe_dump(TASK_DEFS, f, sort_keys=False)


rule demos:
    """Expert demos of a task family with an expert into a local Minari dataset (no network). The state
    and pixel twins of a task share one dataset; it records frames when the sweep has a pixel
    twin."""
    input:
        _defs_input,
    output:
        "{root}/datasets/{family}.json",
    log:
        "{root}/logs/demos/{family}.log",
    params:
        episodes=lambda wc: SECTIONS[ROOT_TO_SWEEP[wc.root]].get("demo_episodes", 50),
        pixels=lambda wc: "--pixels" if _family_needs_pixels(wc) else "",
        tasks=_defs_arg,
    resources:
        runtime=30,
        mem_mb=4000,
        cpus_per_task=1,
    shell:
        "MINARI_DATASETS_PATH={wildcards.root}/datasets cmil-bench demos --task {wildcards.family} "
        "--episodes {params.episodes} {params.pixels} {params.tasks} --overwrite --root {wildcards.root}/datasets "
        "> {log} 2>&1 && echo '{{\"family\": \"{wildcards.family}\"}}' > {output}"


def _family(task):
    return task_entry(task).family


def _family_needs_pixels(wc):
    tasks = SECTIONS[ROOT_TO_SWEEP[wc.root]]["tasks"]
    return any(_family(t) == wc.family and task_entry(t).obs_mode == "pixels" for t in tasks)


def _run_inputs(wc):
    demos = [f"{wc.root}/datasets/{_family(wc.task)}.json"] if _task_has_expert(wc.task) else []
    return demos + _defs_input(wc)


def _run_args(wc):
    name, spec = _spec(wc)
    sec = SECTIONS[name]
    args = sweep.run_args(spec, wc.variant, wc.task, _family(wc.task), sec["task_settings"], sec["budgets"])
    return " ".join([shlex.quote(a) for a in args] + [_defs_arg(wc)]).strip()


def _run_env(wc):
    return f"MINARI_DATASETS_PATH={shlex.quote(wc.root + '/datasets')} " if _task_has_expert(wc.task) else ""


rule run:
    """One (algorithm, task, demos, seed). metrics.csv appears only when the run completes;
    a rerun after a crash resumes from the run's checkpoint."""
    input:
        _run_inputs,
    output:
        "{root}/runs/{variant}/{task}/d{demos}/s{seed}/metrics.csv",
    log:
        "{root}/logs/runs/{variant}/{task}/d{demos}/s{seed}.log",
    benchmark:
        "{root}/benchmarks/{variant}/{task}/d{demos}/s{seed}.tsv"
    params:
        args=_run_args,
        env=_run_env,
    threads: 1
    resources:
        # Retries (profiles: `retries`) get more time and memory with each attempt.
        runtime=lambda wc, attempt: _resources(wc, "runtime") * attempt,
        mem_mb=lambda wc, attempt: _resources(wc, "mem_mb") * attempt,
        cpus_per_task=lambda wc: _resources(wc, "cpus_per_task"),
        gpu=lambda wc: _resources(wc, "gpu") or 0,
    shell:
        "{params.env}cmil-bench run {params.args} --task {wildcards.task} --demos {wildcards.demos} "
        "--seed {wildcards.seed} --out \"$(dirname {output:q})\" --progress off > {log:q} 2>&1"


def _report_inputs(wc):
    return [f"{d}/metrics.csv" for d in run_dirs(ROOT_TO_SWEEP[wc.root])]


rule manifest:
    """The run folders of one sweep, so that its report reads exactly these runs."""
    input:
        _report_inputs,
    output:
        "{root}/report/runs.txt",
    run:
        os.makedirs(os.path.dirname(output[0]), exist_ok=True)
        with open(output[0], "w") as f:
            f.write("\n".join(os.path.dirname(p) for p in input) + "\n")


rule report:
    """rliable aggregates, tables (Markdown, LaTeX) and figures (PNG, PDF) of one sweep."""
    input:
        "{root}/report/runs.txt",
    params:
        reps=lambda wc: SECTIONS[ROOT_TO_SWEEP[wc.root]].get("report_reps", config.get("report_reps", 2000)),
    output:
        "{root}/report/summary.json",
    log:
        "{root}/logs/report.log",
    shell:
        "cmil-bench report --runs {wildcards.root}/runs --manifest {input} --out {wildcards.root}/report "
        "--reps {params.reps} > {log} 2>&1"


rule ablation_figure:
    """Final norm_score of CMIL against each conservatism switch."""
    input:
        "{root}/report/runs.txt",
    output:
        "{root}/report/ablation.png",
    params:
        reps=lambda wc: SECTIONS[ROOT_TO_SWEEP[wc.root]].get("report_reps", config.get("report_reps", 2000)),
    log:
        "{root}/logs/ablation.log",
    shell:
        "python -m analysis.ablation --manifest {input} --out {wildcards.root}/report "
        "--reps {params.reps} > {log} 2>&1"


onstart:
    # Each sweep's planned run folders, one per line, for `cmil-bench status RESULTS_DIR` (its
    # "not started" column); rewritten whenever the workflow starts, from the current config.
    for _sweep, _root in SWEEPS.items():
        if TABLES[_sweep]:
            os.makedirs(_root, exist_ok=True)
            with open(f"{_root}/plan.txt", "w") as _f:
                _f.write("\n".join(run_dirs(_sweep)) + "\n")
