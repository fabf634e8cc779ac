"""The sweep YAML: schema and name checks at planning (cmil_bench/sweep.py, config/schema.yaml),
per-task settings (task_settings) and their order, and a dry run that imports no simulator."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from cmil_bench import sweep
from cmil_bench.errors import UserError

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "config" / "schema.yaml"
HEAVY = ("gymnasium", "gymnasium_robotics", "mujoco", "torch", "minari")


def _load(name: str) -> dict:
    return yaml.safe_load((REPO / "config" / name).read_text())


def _merged(*names: str) -> dict:
    """config/default.yaml with other files over it, merged as Snakemake merges --configfile."""
    from snakemake.utils import update_config

    config = _load("default.yaml")
    for name in names:
        update_config(config, _load(name))
    return config


@pytest.mark.parametrize("names", [(), ("paper.yaml",), ("kitchen-cpu.yaml",), ("adroit.yaml",),
                                   ("locomotion.yaml",), ("locomotion.yaml", "locomotion-hopper-cpu.yaml"),
                                   ("locomotion.yaml", "locomotion-hopper-latent-cpu.yaml"),
                                   ("locomotion.yaml", "locomotion-cpu.yaml")])
def test_shipped_configs_pass(names):
    config = sweep.check(_merged(*names), SCHEMA)
    assert sweep.run_tables(config)["main"]


def test_hopper_overlays_share_one_budget():
    """The two Hopper overlays run into one results folder and one report: every online run of
    either gets the same env-step budget and evaluation schedule, and the world models run on the
    CPU at the cpu sizes under names that say so."""
    seen = {}
    for overlay in ("locomotion-hopper-cpu.yaml", "locomotion-hopper-latent-cpu.yaml"):
        config = sweep.check(_merged("locomotion.yaml", overlay), SCHEMA)
        table = sweep.run_tables(config)["main"]
        assert config["results"] == "results/locomotion-hopper"
        for variant in table:
            sets = _sets(config, "main", variant, "hopper")
            seen[variant] = (sets.get("total_steps"), sets.get("eval_every"), sets.get("device"))
    online = {v: s for v, s in seen.items() if not v.startswith("bc")}
    assert sorted(online) == ["cmil-cpu", "dac", "gail", "vmail-cpu"]
    assert {s[:2] for s in online.values()} == {(100000, 10000)}
    assert online["cmil-cpu"][2] == online["vmail-cpu"][2] == "cpu"


def test_locomotion_cpu_is_the_hopper_setting_on_the_other_tasks():
    """config/locomotion-cpu.yaml gives Walker2d, HalfCheetah and Ant exactly the runs the Hopper
    overlay gave Hopper: the same variants, demo counts, seeds and settings, so the per-task
    numbers in RESULTS compare like with like. The one difference is the DAC reference's own: 1e4
    random actions on HalfCheetah and Ant, 1e3 elsewhere (the Config's default)."""
    hopper = sweep.check(_merged("locomotion.yaml", "locomotion-hopper-cpu.yaml"), SCHEMA)
    other = sweep.check(_merged("locomotion.yaml", "locomotion-cpu.yaml"), SCHEMA)
    assert "hopper" not in other["tasks"] and other["tasks"]
    assert other["seeds"] == hopper["seeds"]
    h_table, o_table = sweep.run_tables(hopper)["main"], sweep.run_tables(other)["main"]
    assert {v: s["demos"] for v, s in o_table.items()} == {v: s["demos"] for v, s in h_table.items()}
    for task in list(other["tasks"]) + ["ant"]:
        with_task = dict(other, tasks=[task])
        for variant in o_table:
            sets = _sets(with_task, "main", variant, task)
            if variant == "dac":
                assert sets.pop("random_steps", None) == (10000 if task in ("halfcheetah", "ant") else None)
            assert sets == _sets(hopper, "main", variant, "hopper"), (task, variant)


ONLINE = ("gail", "dac", "vmail", "cmil")


def _sets(config: dict, sweep_name: str, variant: str, task: str) -> dict:
    from envs.catalog import task_entry

    spec = sweep.run_tables(config)[sweep_name][variant]
    sec = sweep.sections(config)[sweep_name]
    return sweep.run_sets(spec, variant, task, task_entry(task).family, sec["task_settings"], sec["budgets"])


@pytest.mark.parametrize("names", [(), ("paper.yaml",), ("kitchen-cpu.yaml",), ("adroit.yaml",)])
def test_every_online_algorithm_gets_the_same_budget_on_a_task(names):
    """Matched budgets: in every shipped sweep, every online algorithm of `algos` runs each task
    with the same total_steps and eval_every (from `budgets`), and BC keeps its own."""
    config = sweep.check(_merged(*names), SCHEMA)
    algos = sweep.run_tables(config)["main"]
    assert set(ONLINE) <= set(algos)
    for task in config["tasks"]:
        budgets = {name: {k: _sets(config, "main", name, task).get(k) for k in sweep.BUDGET_KEYS}
                   for name, spec in algos.items() if spec["algo"] != "bc"}
        assert len({tuple(b.values()) for b in budgets.values()}) == 1, (task, budgets)
        assert None not in next(iter(budgets.values())).values()
        own = config["algo_settings"]["bc"].get("set") or {}  # BC: its gradient budget, if any
        assert _sets(config, "main", "bc", task).get("total_steps") == own.get("total_steps")


def test_default_sweep_budgets_and_variants():
    config = sweep.check(_load("default.yaml"), SCHEMA)
    for algo in ONLINE:
        for task in ("pointmaze-umaze", "fetch-push", "fetch-push-pixels"):  # a pixel twin by family
            assert _sets(config, "main", algo, task) == {"total_steps": 2400, "eval_every": 600}, algo
    assert _sets(config, "main", "bc", "fetch-push") == {}
    # variants: the tuned GAIL keeps its pointmaze learning rate; the long ones leave the budget
    config["algos"] = ["gail-cpu-tuned", "dac-long", "gail-long", "cmil-w0", "bc-wd"]
    assert _sets(config, "main", "gail-cpu-tuned", "pointmaze-umaze")["lr"] == 1.0e-3
    assert "lr" not in _sets(config, "main", "gail-cpu-tuned", "fetch-push")
    assert _sets(config, "main", "dac-long", "fetch-push")["total_steps"] == 50000
    assert _sets(config, "main", "gail-long", "pointmaze-umaze")["total_steps"] == 300000
    assert _sets(config, "main", "cmil-w0", "fetch-push") == {"total_steps": 2400, "eval_every": 600,
                                                              "penalty_weight": 0}
    assert _sets(config, "main", "bc-wd", "fetch-push") == {"weight_decay": 1.0e-3}
    # the ablation has the same budgets; the smoke sweep (preset smoke) has none
    assert _sets(config, "ablation", "cmil[penalty_weight=0]", "fetch-push")["total_steps"] == 2400
    config["smoke"]["tasks"] = ["fetch-push"]
    assert _sets(config, "smoke", "dac", "fetch-push") == {}
    paper = sweep.check(_merged("paper.yaml"), SCHEMA)
    assert sweep.sections(paper)["main"]["task_settings"] == {}
    assert _sets(paper, "main", "cmil", "kitchen-mixed-pixels") == {
        "total_steps": 200000, "eval_every": 10000, "device": "cuda"}


def test_every_variant_names_config_keys_of_its_algorithm():
    """The shipped variants name keys that their algorithm's Config has (checked at run time
    too; here before a sweep is started)."""
    import dataclasses

    from algorithms import get_algorithm

    config = sweep.check(_load("default.yaml"), SCHEMA)
    for name, v in config["variants"].items():
        fields = {f.name for f in dataclasses.fields(get_algorithm(v["algo"]).Config)}
        assert set(v.get("set") or {}) <= fields, (name, sorted(set(v["set"]) - fields))


def test_budgets_order_task_settings_and_set_win():
    ts = {"fam": {"a": {"total_steps": 7}}}
    budgets = {"fam": {"total_steps": 100, "eval_every": 10}, "fam-x": {"total_steps": 50, "eval_every": 5}}
    spec = {"algo": "a", "preset": "cpu", "set": {}}
    assert sweep.run_sets(spec, "a", "fam-x", "fam", {}, budgets) == {"total_steps": 50, "eval_every": 5}
    assert sweep.run_sets(spec, "a", "fam-y", "fam", {}, budgets) == {"total_steps": 100, "eval_every": 10}
    assert sweep.run_sets(spec, "a", "fam-y", "fam", ts, budgets) == {"total_steps": 7, "eval_every": 10}
    spec["set"] = {"eval_every": 3}
    assert sweep.run_sets(spec, "a", "fam-y", "fam", ts, budgets) == {"total_steps": 7, "eval_every": 3}
    bc = {"algo": "bc", "preset": "cpu", "set": {}}
    assert sweep.run_sets(bc, "bc", "fam-y", "fam", {}, budgets) == {}  # gradient steps: its own
    args = sweep.run_args({"algo": "dac", "preset": "cpu", "set": {}}, "dac", "fam-x", "fam", {}, budgets)
    assert args == ["--algo", "dac", "--variant", "dac", "--preset", "cpu", "--set", "total_steps=50",
                    "--set", "eval_every=5"]


def test_task_settings_order_and_explicit_set_wins():
    ts = {"fam": {"a": {"k1": "a-fam", "k2": "a-fam", "k3": "a-fam", "k4": "a-fam", "k5": "a-fam"},
                  "v": {"k3": "v-fam", "k4": "v-fam", "k5": "v-fam"}},
          "fam-x": {"a": {"k2": "a-task", "k3": "a-task", "k4": "a-task", "k5": "a-task"},
                    "v": {"k4": "v-task", "k5": "v-task"}}}
    spec = {"algo": "a", "preset": "cpu", "set": {"k5": "set"}}
    assert sweep.run_sets(spec, "v", "fam-x", "fam", ts) == {
        "k1": "a-fam", "k2": "a-task", "k3": "v-fam", "k4": "v-task", "k5": "set"}
    args = sweep.run_args(spec, "v", "fam-x", "fam", ts)
    assert args[:6] == ["--algo", "a", "--variant", "v", "--preset", "cpu"]
    assert "k5=set" in args and "k5=v-task" not in args


def test_algo_settings_set_wins_over_budgets_and_task_settings():
    config = _load("default.yaml")
    config["algo_settings"]["dac"]["set"] = {"total_steps": 50000}
    config["task_settings"]["fetch-push"] = {"dac": {"total_steps": 7000, "gp_weight": 1}}
    config = sweep.check(config, SCHEMA)
    assert _sets(config, "main", "dac", "fetch-push") == {"total_steps": 50000, "eval_every": 600,
                                                          "gp_weight": 1}


def test_command_line_strings_are_normalised():
    """`snakemake --config seeds='[0,1]'` gives strings inside lists and dicts."""
    config = _load("default.yaml")
    config.update({"seeds": ["0", "1"], "task_settings": "null",
                   "resources": {"default": {"runtime": "30", "mem_mb": "4000", "cpus_per_task": "1"}},
                   "algo_settings": {"dac": {"preset": "null", "set": {"total_steps": "500"}}}})
    out = sweep.check(config, SCHEMA)
    assert out["seeds"] == [0, 1] and out["task_settings"] is None
    assert out["resources"]["default"]["runtime"] == 30
    assert out["algo_settings"]["dac"] == {"preset": None, "set": {"total_steps": "500"}}


def _with(path: str, value):
    """default.yaml with the value at the dotted ``path`` set (a new key where it is missing)."""
    config = _load("default.yaml")
    *parents, last = path.split(".")
    node = config
    for p in parents:
        node = node.setdefault(p, {})
    node[last] = value
    return config


@pytest.mark.parametrize("path, value, message", [
    ("algo_setings", {}, r"unknown key 'algo_setings' \(did you mean 'algo_settings'\?\); known keys: abl"),
    ("algo_settings.dac.sett", {}, r"unknown key 'sett' in 'algo_settings.dac'"),
    ("algos", ["bcc"], r"key 'algos\[0\]': unknown algorithm or variant 'bcc'"),
    ("algos", ["bc", "dac-lon"], r"key 'algos\[1\]': unknown algorithm or variant 'dac-lon'"),
    ("algo_settings.dac-lon", {"preset": "cpu"}, r"key 'algo_settings.dac-lon': unknown algorithm or var"),
    ("variants.x", {"algo": "bcc"}, r"key 'variants.x.algo': unknown algorithm 'bcc'"),
    ("variants.x", {"preset": "cpu"}, r"key 'variants.x': 'algo' is a required property"),
    ("variants.dac", {"algo": "dac"}, r"key 'variants.dac': a variant cannot take an algorithm's name"),
    ("tasks", ["fetch-pus"], r"key 'tasks\[0\]': unknown task 'fetch-pus'"),
    ("smoke.tasks", ["nowhere"], r"key 'smoke.tasks\[0\]': unknown task 'nowhere'"),
    ("ablation.tasks", ["nowhere"], r"key 'ablation.tasks\[0\]': unknown task 'nowhere'"),
    ("ablation.algo", "cmill", r"key 'ablation.algo': unknown algorithm 'cmill'"),
    ("task_settings.fetch-pushh", {"dac": {}}, r"'task_settings.fetch-pushh': unknown task or task family"),
    ("task_settings.fetch-push.dacc", {}, r"'task_settings.fetch-push.dacc': unknown algorithm or variant"),
    ("resources.dacc", {"runtime": 5}, r"key 'resources.dacc': unknown algorithm or variant"),
    ("seeds", ["a"], r"key 'seeds\[0\]': 'a' is not of type 'integer'"),
    ("demos", 5, r"key 'demos': 5 is not of type 'array'"),
    ("demos", [0], r"key 'demos\[0\]': 0 is less than the minimum of 1"),
    ("report_reps", "many", r"key 'report_reps': 'many' is not of type 'integer'"),
    ("resources.default.runtime", "x", r"key 'resources.default.runtime': 'x' is not of type 'integer'"),
    ("algo_settings.bc.set", {"grad_steps": 5}, r"'grad_steps' \(from algo_settings.bc.set\) is now call"),
    ("variants.x", {"algo": "dac", "set": {"gamma": 0.9}}, r"'gamma' \(from variants.x.set\) is now called"),
    ("task_settings.fetch-push.dac", {"task_total_steps": 5}, r"'task_total_steps' .* was removed"),
    ("ablation.switches", {"disc_gp": [1]}, r"'disc_gp' \(from ablation.switches\) is now called 'gp_w"),
    ("smoke.algos", "bc", r"key 'smoke.algos': 'bc' is not of type 'array'"),
    ("budgets.fetch-push", {"total_steps": 100}, r"key 'budgets.fetch-push': 'eval_every' is a required"),
    ("budgets.fetch-push", {"total_steps": 100, "eval_every": 10, "lr": 1},
     r"unknown key 'lr' in 'budgets.fetch-push'.*known keys: eval_every, total_steps"),
    ("budgets.fetch-push.total_steps", 0, r"key 'budgets.fetch-push.total_steps': 0 is less than the min"),
    ("budgets.fetch-push.eval_every", "often", r"'budgets.fetch-push.eval_every': 'often' is not of type"),
    ("budgets.fetch-push.eval_every", 5000, r"'budgets.fetch-push.eval_every': 5000 is more than its total"),
    ("budgets.fetch-pushh", {"total_steps": 10, "eval_every": 5}, r"'budgets.fetch-pushh': unknown task or"),
    ("budgets", {"fetch-push": {"total_steps": 10, "eval_every": 5}},
     r"key 'budgets': task 'pointmaze-umaze' has no budget .*its family 'pointmaze-umaze'"),
    ("ablation.budgets", {"fetch-push": {"total_steps": 10, "eval_every": 5}},
     r"key 'ablation.budgets': task 'pointmaze-umaze' has no budget"),
    ("smoke.budgets", [1], r"key 'smoke.budgets': \[1\] is not of type 'object', 'null'"),
])
def test_bad_configs_name_the_key(path, value, message):
    with pytest.raises(sweep.SweepConfigError, match=message):
        sweep.check(_with(path, value), SCHEMA)
    assert issubclass(sweep.SweepConfigError, UserError)


def test_every_schema_key_has_a_description():
    schema = yaml.safe_load(SCHEMA.read_text())
    defs = schema["$defs"]
    missing = []

    def walk(node, where):
        for key, sub in (node.get("properties") or {}).items():
            ref = defs.get(str(sub.get("$ref", "")).rsplit("/", 1)[-1], {})
            if "description" not in sub and "description" not in ref and "allOf" not in sub:
                missing.append(f"{where}{key}")
            walk({**ref, **sub}, f"{where}{key}.")
        for inner in ("additionalProperties", "items"):
            if isinstance(node.get(inner), dict):
                sub = node[inner]
                walk({**defs.get(str(sub.get("$ref", "")).rsplit("/", 1)[-1], {}), **sub}, where + "*.")

    walk(schema, "")
    assert not missing, missing
    assert set(schema["properties"]) >= {"results", "demo_episodes", "report_reps", "algos", "tasks",
                                         "demos", "seeds", "algo_settings", "variants", "task_settings",
                                         "resources", "smoke", "ablation"}


def test_catalog_agrees_with_the_registry():
    """envs/catalog.py (what planning reads) lists exactly the registered tasks, with their
    family, observation mode and whether they have a scripted expert."""
    from envs.catalog import TASKS
    from envs.registry import get_task, list_tasks

    assert sorted(TASKS) == list_tasks()
    for name, entry in TASKS.items():
        spec = get_task(name)
        assert (entry.family, entry.obs_mode, entry.has_expert) == (spec.family or name, spec.obs_mode,
                                                                   bool(spec.expert)), name


# ------------------------------------------------------------------ Snakemake in a subprocess

@pytest.fixture
def workflow(tmp_path):
    """A copy of the Snakefile and config/, and PYTHONPATH with this checkout behind stand-ins of
    the simulation packages that fail on import: planning must not import them, and a job that
    did start would fail at once."""
    work = tmp_path / "repo"
    work.mkdir()
    shutil.copy(REPO / "Snakefile", work)
    shutil.copytree(REPO / "config", work / "config")
    fakes = tmp_path / "fakes"
    for name in HEAVY:
        (fakes / name).mkdir(parents=True)
        (fakes / name / "__init__.py").write_text(f"raise ImportError('{name} imported while planning')\n")
    env = dict(os.environ, PYTHONPATH=f"{fakes}{os.pathsep}{REPO}")
    return work, env


def _snakemake(work: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["snakemake", "--cores", "1", *args], cwd=work, env=env, capture_output=True,
                          text=True, timeout=300, check=False)


@pytest.mark.slow
def test_dry_run_imports_no_simulator(workflow):
    work, env = workflow
    proc = _snakemake(work, env, "-n", "-p", "all")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    stats = proc.stdout[proc.stdout.index("Job stats:"):]
    counts = {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", stats, re.MULTILINE)}
    # bc: 4 demo counts; gail, dac, vmail, cmil: 1; two tasks, three seeds; one dataset per task
    assert counts["run"] == (4 + 4) * 2 * 3 and counts["demos"] == 2 and counts["report"] == 1
    dac_push = [ln for ln in proc.stdout.splitlines()
                if "cmil-bench run --algo dac " in ln and "--task fetch-push " in ln]
    assert len(dac_push) == 3
    assert all("--preset cpu --set total_steps=2400 --set eval_every=600 " in ln for ln in dac_push)
    for algo in ("gail", "vmail", "cmil"):
        runs = [ln for ln in proc.stdout.splitlines() if f"cmil-bench run --algo {algo} " in ln]
        assert len(runs) == 6 and all("--set total_steps=2400 --set eval_every=600 " in ln for ln in runs)
    bc = [ln for ln in proc.stdout.splitlines() if "cmil-bench run --algo bc " in ln]
    assert len(bc) == 24 and not any("total_steps" in ln for ln in bc)


@pytest.mark.slow
def test_locomotion_config_plans_without_a_simulator(workflow):
    """config/locomotion.yaml: four tasks x 1/4/10 demos x 5 seeds x five algorithms and the
    bc-sub20 variant, the demos of each task rolled out from its expert policy, DAC at 1M env steps
    with 1-in-20 subsampling."""
    work, env = workflow
    proc = _snakemake(work, env, "-n", "-p", "all", "--configfile", "config/locomotion.yaml")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    stats = proc.stdout[proc.stdout.index("Job stats:"):]
    counts = {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", stats, re.MULTILINE)}
    assert counts["run"] == 6 * 4 * 3 * 5 and counts["demos"] == 4
    sub = [ln for ln in proc.stdout.splitlines() if "--variant bc-sub20" in ln]
    assert len(sub) == 60 and all("--set subsample=20" in ln for ln in sub)
    dac = [ln for ln in proc.stdout.splitlines() if "cmil-bench run --algo dac " in ln]
    assert len(dac) == 60 and all("--set total_steps=1000000 --set eval_every=25000 " in ln for ln in dac)
    cmil = [ln for ln in proc.stdout.splitlines() if "cmil-bench run --algo cmil " in ln]
    assert len(cmil) == 60 and all("--set total_steps=200000 " in ln for ln in cmil)
    assert "--preset" not in proc.stdout


@pytest.mark.slow
@pytest.mark.parametrize("config, key", [
    ("algo_setings={}", "'algo_setings'"),
    ("algos=[bcc]", "'algos[0]': unknown algorithm or variant 'bcc'"),
    ("tasks=[fetch-pus]", "'tasks[0]': unknown task 'fetch-pus'"),
    ("variants={x: {algo: bcc}}", "'variants.x.algo': unknown algorithm 'bcc'"),
    ("seeds=[a]", "'seeds[0]': 'a' is not of type 'integer'"),
    ("task_definitions={car: {env_id: X}}", "'task_definitions.car': 'episode_steps' is a required property"),
    ("budgets={fetch-push: {total_steps: 10, eval_every: 50}}", "'budgets.fetch-push.eval_every': 50 is"),
])
def test_bad_config_stops_the_workflow_before_any_job(workflow, config, key):
    work, env = workflow
    proc = _snakemake(work, env, "all", "--config", config)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("sweep config: ")]
    assert len(lines) == 1 and key in lines[0], proc.stderr[-2000:]
    assert not (work / "results").exists() and "Job stats" not in proc.stdout + proc.stderr
