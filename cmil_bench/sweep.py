"""The sweep YAML: checked when the Snakefile plans, and turned into each run's arguments.

``check`` validates the merged config against ``config/schema.yaml`` (every key documented
there) and then the names in it: algorithms, variants and tasks must exist (the built-in tasks
and those the config defines under ``task_definitions``, checked against envs/task_schema.yaml),
and old config keys are refused with their new names. ``run_tables`` lists the runs of each
sweep section, and ``run_args`` gives one run's ``cmil-bench run`` arguments: the presets, then
the matched budget of the task (``budgets``: one env-step budget and evaluation schedule for
every online algorithm), then the per-task settings (``task_settings``), then every explicit
``set:``.

The Snakefile imports this module to plan, so it imports nothing heavy (no gymnasium, MuJoCo,
torch or minari): a dry run works without the simulators.
"""

from __future__ import annotations

import difflib
import json
import re
from pathlib import Path
from typing import Any

from cmil_bench.config import check_key_name
from cmil_bench.errors import UserError


class SweepConfigError(UserError):
    """A sweep config that the schema or the name checks refuse."""


# Algorithms whose budget axis is gradient steps (they never step an environment while training):
# the sweep's matched env-step budgets (``budgets``) do not apply to them; they keep their own.
OFFLINE_ALGOS = frozenset({"bc"})
BUDGET_KEYS = ("total_steps", "eval_every")


def _key(path) -> str:
    """``["algo_settings", "dac", "set"]`` -> ``algo_settings.dac.set``; list indices as ``[i]``."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _did_you_mean(name: Any, known) -> str:
    close = difflib.get_close_matches(str(name), sorted(map(str, known)), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _schema_message(err) -> str:
    where = _key(err.absolute_path)
    if err.validator == "additionalProperties" and isinstance(err.instance, dict):
        known = sorted(err.schema.get("properties", {}))
        extra = sorted(k for k in err.instance if k not in known)
        inside = f" in {where!r}" if where else ""
        hint = f"; known keys: {', '.join(known)}" if known else ""
        names = ", ".join(repr(k) for k in extra)
        return f"unknown key {names}{inside}{_did_you_mean(extra[0], known)}{hint}"
    if err.validator == "required":
        return f"{f'key {where!r}' if where else 'the config'}: {err.message}"
    return f"key {where!r}: {err.message}" if where else err.message


def _resolve(schema: dict, root: dict) -> dict:
    """``schema`` with its local ``$ref`` (``#/$defs/NAME``) merged in."""
    while "$ref" in schema:
        rest = {k: v for k, v in schema.items() if k != "$ref"}
        schema = {**root["$defs"][schema["$ref"].rsplit("/", 1)[1]], **rest}
    return schema


def _from_text(text: str, types: list[str]) -> Any:
    t = text.strip()
    if "null" in types and t in ("null", "~", "None"):
        return None
    if "string" in types:
        return text
    if "integer" in types and re.fullmatch(r"[+-]?\d+", t):
        return int(t)
    if "number" in types:
        try:
            return float(t)
        except ValueError:
            pass
    if "boolean" in types and t.lower() in ("true", "false"):
        return t.lower() == "true"
    return text


def normalise(value: Any, schema: dict, root: dict) -> Any:
    """``value`` with the strings that ``snakemake --config`` makes of nested numbers, booleans
    and nulls (it reads them with YAML's BaseLoader: ``seeds='[0,1]'`` gives ``['0', '1']``)
    turned back into what the schema expects at their place."""
    schema = _resolve(schema, root)
    for sub in schema.get("allOf", []):
        value = normalise(value, sub, root)
    types = schema.get("type", [])
    types = [types] if isinstance(types, str) else list(types)
    if isinstance(value, str) and types:
        value = _from_text(value, types)
    if isinstance(value, dict):
        props, extra = schema.get("properties", {}), schema.get("additionalProperties")
        return {k: normalise(v, props[k] if k in props else (extra if isinstance(extra, dict) else {}),
                             root) for k, v in value.items()}
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [normalise(v, schema["items"], root) for v in value]
    return value


def check_schema(config: dict, schema_path: str | Path) -> dict:
    """The config normalised (``normalise``); SweepConfigError naming the first key (sorted by
    key) that the schema at ``schema_path`` refuses."""
    import jsonschema
    import yaml

    schema = yaml.safe_load(Path(schema_path).read_text())
    config = normalise(config, schema, schema)
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(config),
                    key=lambda e: [str(p) for p in e.absolute_path])
    if errors:
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise SweepConfigError(_schema_message(errors[0]) + more)
    return config


def _unknown(where: str, name: Any, what: str, known) -> SweepConfigError:
    return SweepConfigError(f"key {where!r}: unknown {what} {name!r}{_did_you_mean(name, known)}; "
                            f"known: {', '.join(sorted(known))}")


def _check_sets(sets: dict | None, where: str) -> None:
    for k in sets or {}:
        try:
            check_key_name(k, where)
        except UserError as e:
            raise SweepConfigError(str(e)) from None


def _check_task_settings(ts: dict | None, where: str, tasks, runnable) -> None:
    for task, per_algo in (ts or {}).items():
        if task not in tasks:
            raise _unknown(f"{where}.{task}", task, "task or task family", tasks)
        for name, sets in per_algo.items():
            if name not in runnable:
                raise _unknown(f"{where}.{task}.{name}", name, "algorithm or variant", runnable)
            _check_sets(sets, f"{where}.{task}.{name}")


def budget_for(budgets: dict | None, task: str, family: str) -> dict | None:
    """The matched budget of ``task``: its own entry, else its family's; None without one."""
    budgets = budgets or {}
    return budgets.get(task) or budgets.get(family)


def _check_budgets(budgets: dict | None, where: str, task_names, tasks, known: dict) -> None:
    """Budget entries name known tasks or families, evaluate within the budget, and cover every
    task of the sweep section (``tasks``) when there are any. ``known``: task name -> its catalog
    entry (built-in and inline definitions)."""
    if not budgets:
        return
    for name, b in budgets.items():
        if name not in task_names:
            raise _unknown(f"{where}.{name}", name, "task or task family", task_names)
        if b["eval_every"] > b["total_steps"]:
            raise SweepConfigError(f"key '{where}.{name}.eval_every': {b['eval_every']} is more than "
                                   f"its total_steps {b['total_steps']}")
    for task in tasks or []:
        family = known[task].family
        if budget_for(budgets, task, family) is None:
            raise SweepConfigError(f"key {where!r}: task {task!r} has no budget (give one under "
                                   f"{task!r} or its family {family!r}), so its "
                                   "online algorithms would not share one")


def check_names(config: dict) -> None:
    """Every algorithm, variant and task named in ``config`` exists; no old config key is used."""
    from algorithms import ALGORITHMS
    from envs import catalog

    # Inline task definitions (task_definitions:) are checked here and merged over the built-ins.
    try:
        defs = catalog.check_definitions(config.get("task_definitions"), "task_definitions")
    except UserError as e:
        raise SweepConfigError(str(e)) from None
    TASKS, FAMILIES = catalog.merged(defs)

    algos = set(ALGORITHMS)
    variants = config.get("variants") or {}
    for name, v in variants.items():
        if name in algos:
            raise SweepConfigError(f"key 'variants.{name}': a variant cannot take an algorithm's name")
        if v["algo"] not in algos:
            raise _unknown(f"variants.{name}.algo", v["algo"], "algorithm", algos)
        _check_sets(v.get("set"), f"variants.{name}.set")
    runnable = algos | set(variants)
    task_names = set(TASKS) | set(FAMILIES)

    def each(where: str, values, what: str, known) -> None:
        for i, n in enumerate(values or []):
            if n not in known:
                raise _unknown(f"{where}[{i}]", n, what, known)

    each("algos", config.get("algos"), "algorithm or variant", runnable)
    each("tasks", config.get("tasks"), "task", TASKS)
    for name, s in (config.get("algo_settings") or {}).items():
        if name not in runnable:
            raise _unknown(f"algo_settings.{name}", name, "algorithm or variant", runnable)
        _check_sets(s.get("set"), f"algo_settings.{name}.set")
    _check_task_settings(config.get("task_settings"), "task_settings", task_names, runnable)
    _check_budgets(config.get("budgets"), "budgets", task_names, config.get("tasks"), TASKS)
    for name in config.get("resources") or {}:
        if name != "default" and name not in runnable:
            raise _unknown(f"resources.{name}", name, "algorithm or variant", runnable | {"default"})
    smoke = config.get("smoke") or {}
    each("smoke.algos", smoke.get("algos"), "algorithm or variant", runnable)
    each("smoke.tasks", smoke.get("tasks"), "task", TASKS)
    _check_task_settings(smoke.get("task_settings"), "smoke.task_settings", task_names, runnable)
    _check_budgets(smoke.get("budgets"), "smoke.budgets", task_names, smoke.get("tasks"), TASKS)
    abl = config.get("ablation") or {}
    if abl:
        if abl.get("algo", "cmil") not in algos:
            raise _unknown("ablation.algo", abl.get("algo"), "algorithm", algos)
        each("ablation.tasks", abl.get("tasks"), "task", TASKS)
        _check_sets(abl.get("set"), "ablation.set")
        _check_sets(abl.get("switches"), "ablation.switches")
        _check_task_settings(abl.get("task_settings"), "ablation.task_settings", task_names, runnable)
        _check_budgets(abl.get("budgets"), "ablation.budgets", task_names, abl.get("tasks"), TASKS)


def check(config: dict, schema_path: str | Path) -> dict:
    """The config, normalised and checked: schema first (types and key names), then the names of
    algorithms, variants and tasks. SweepConfigError names the first problem."""
    config = check_schema(config, schema_path)
    check_names(config)
    return config


# --------------------------------------------------------------------------- runs of a sweep

def sections(config: dict) -> dict[str, dict]:
    """Sweep name -> its section: algos (or the ablation's algo and switches), tasks, demos,
    seeds, demo_episodes, report_reps, budgets, task_settings. Top-level budgets and
    task_settings belong to the main sweep only; smoke and ablation read their own."""
    main = {"algos": config["algos"], "tasks": config["tasks"], "demos": config["demos"],
            "seeds": config["seeds"], "demo_episodes": config.get("demo_episodes", 50),
            "report_reps": config.get("report_reps", 2000),
            "budgets": config.get("budgets") or {},
            "task_settings": config.get("task_settings") or {}}
    smoke = dict(config.get("smoke") or {})
    smoke["force_demos"] = True
    abl = dict(config.get("ablation") or {})
    for sec in (smoke, abl):
        sec["budgets"] = sec.get("budgets") or {}
        sec["task_settings"] = sec.get("task_settings") or {}
    return {"main": main, "smoke": smoke, "ablation": abl}


def variant_table(config: dict, section: dict) -> dict[str, dict]:
    """Variant name -> {algo, preset, set, demos} for the algorithms of one sweep section."""
    table = {}
    settings = config.get("algo_settings") or {}
    variants = config.get("variants") or {}
    for name in section.get("algos") or []:
        if name in variants:
            v = dict(variants[name])
            algo = v["algo"]
        else:
            v, algo = {}, name
        base = dict(settings.get(name, settings.get(algo, {})) or {})
        preset = section.get("preset") or v.get("preset") or base.get("preset")
        sets = dict(base.get("set") or {})
        sets.update(v.get("set") or {})
        demos = v.get("demos") or base.get("demos") or section["demos"]
        if section.get("force_demos"):
            demos = section["demos"]
        table[name] = {"algo": algo, "preset": preset, "set": sets, "demos": list(demos)}
    return table


def ablation_table(section: dict) -> dict[str, dict]:
    """``ALGO[KEY=VALUE]`` -> its spec: the section's set with one switch changed."""
    table = {}
    algo = section.get("algo", "cmil")
    for key, values in (section.get("switches") or {}).items():
        for val in values:
            sets = dict(section.get("set") or {})
            sets[key] = val
            table[f"{algo}[{key}={val}]"] = {"algo": algo, "preset": section.get("preset"),
                                             "set": sets, "demos": list(section["demos"])}
    return table


def run_tables(config: dict) -> dict[str, dict[str, dict]]:
    secs = sections(config)
    return {"main": variant_table(config, secs["main"]),
            "smoke": variant_table(config, secs["smoke"]) if secs["smoke"].get("algos") else {},
            "ablation": ablation_table(secs["ablation"]) if secs["ablation"].get("switches") else {}}


def run_sets(spec: dict, variant: str, task: str, family: str, task_settings: dict,
             budgets: dict | None = None) -> dict:
    """The ``--set`` values of one run, later wins: the task's matched budget (``budgets``; online
    algorithms only), the algorithm's entry under the task's family in ``task_settings``, then
    under the task, the variant's the same way, then the spec's own ``set`` (algo_settings,
    variants, the ablation's set and switch)."""
    out: dict[str, Any] = {}
    budget = budget_for(budgets, task, family)
    if budget and spec["algo"] not in OFFLINE_ALGOS:
        out.update({k: budget[k] for k in BUDGET_KEYS})
    for who in dict.fromkeys((spec["algo"], variant)):
        for where in dict.fromkeys((family, task)):
            out.update(((task_settings or {}).get(where) or {}).get(who) or {})
    out.update(spec["set"])
    return out


def _fmt(v: Any) -> str:
    return json.dumps(v) if isinstance(v, (list, tuple)) else str(v)


def run_args(spec: dict, variant: str, task: str, family: str, task_settings: dict,
             budgets: dict | None = None) -> list[str]:
    """``cmil-bench run`` arguments of one run (without task, demos, seed and folder)."""
    args = ["--algo", spec["algo"], "--variant", variant]
    if spec["preset"]:
        args += ["--preset", spec["preset"]]
    for k, v in run_sets(spec, variant, task, family, task_settings, budgets).items():
        args += ["--set", f"{k}={_fmt(v)}"]
    return args
