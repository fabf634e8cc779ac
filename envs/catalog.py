"""Task definitions as data: envs/tasks.yaml, checked against envs/task_schema.yaml.

This module reads task definitions with pyyaml and checks them with jsonschema; it imports no
simulator, so the Snakefile plans a sweep from it (task names, families, observation modes, which
families have an expert whose demos the workflow collects) and a dry run needs neither gymnasium
nor MuJoCo. ``envs/registry.py`` builds each task's ``TaskSpec`` from the same definitions.

A definition (one YAML entry, keyed by its family name) makes the state task ``FAMILY`` and/or the
pixel twin ``FAMILY-pixels`` (its ``modes``). More definitions come from a sweep config's
``task_definitions:`` or from a file given with ``--tasks``; they are merged over the built-ins
(an entry of the same name replaces the built-in one whole).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from cmil_bench.errors import UserError

HERE = Path(__file__).resolve().parent
BUILTIN_FILE = HERE / "tasks.yaml"
SCHEMA_FILE = HERE / "task_schema.yaml"
PIXEL_SUFFIX = "-pixels"


@dataclass(frozen=True)
class TaskEntry:
    name: str
    family: str
    obs_mode: str  # "state" | "pixels"
    has_expert: bool


def _schema() -> dict:
    global _SCHEMA
    if _SCHEMA is None:
        _SCHEMA = yaml.safe_load(SCHEMA_FILE.read_text())
    return _SCHEMA


_SCHEMA: dict | None = None


def _where(path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def _message(err, prefix: str) -> str:
    """One line naming the key that ``err`` (a jsonschema error) refuses."""
    where = prefix + _where(err.absolute_path)
    if err.validator == "additionalProperties" and isinstance(err.instance, dict):
        known = sorted(err.schema.get("properties", {}))
        extra = sorted(k for k in err.instance if k not in known)
        close = difflib.get_close_matches(str(extra[0]), known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return (f"unknown key {', '.join(repr(k) for k in extra)} in {where!r}{hint}; "
                f"known keys: {', '.join(known)}")
    if err.validator == "oneOf" and err.absolute_path and err.absolute_path[-1] == "success":
        return (f"key {where!r}: {err.instance!r} is no success rule; use {{any: KEY}}, "
                "{final: KEY}, {function: DOTTED.NAME, kwargs: {...}} or null")
    if err.validator == "pattern":
        return f"key {where!r}: {err.instance!r} is not a dotted name like package.module:attribute"
    return f"key {where!r}: {err.message}"


def check_definition(name: Any, entry: Any, where: str = "tasks") -> dict:
    """``entry`` checked against envs/task_schema.yaml and a few rules the schema cannot say;
    UserError with one line naming the first bad key."""
    import jsonschema

    prefix = f"{where}.{name}"
    if not isinstance(name, str) or not name or "/" in name or name.endswith(PIXEL_SUFFIX):
        raise UserError(f"{where}: bad task name {name!r} (a non-empty name without '/' that does "
                        f"not end in {PIXEL_SUFFIX!r}: the pixel twin gets that suffix)")
    if not isinstance(entry, dict):
        raise UserError(f"key {prefix!r}: a task definition is a mapping, got {entry!r}")
    errors = sorted(jsonschema.Draft202012Validator(_schema()).iter_errors(entry),
                    key=lambda e: (len(e.absolute_path), [str(p) for p in e.absolute_path]))
    if errors:
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise UserError(_message(errors[0], prefix) + more)
    if "state_keys" in entry and "flatten" in entry:
        raise UserError(f"key {prefix!r}: give state_keys or flatten, not both")
    refs = entry.get("references") or {}
    if refs.get("random") is not None and refs.get("demo") is not None \
            and float(refs["random"]) == float(refs["demo"]):
        raise UserError(f"key {prefix + '.references'!r}: random and demo are equal "
                        "(norm_score would divide by zero)")
    return entry


def check_definitions(defs: Any, where: str) -> dict[str, dict]:
    if defs is None:
        return {}
    if not isinstance(defs, dict):
        raise UserError(f"key {where!r}: task definitions are a mapping NAME -> definition, "
                        f"got {type(defs).__name__}")
    return {name: check_definition(name, entry, where) for name, entry in defs.items()}


def task_names(name: str, entry: dict) -> list[tuple[str, str]]:
    """(task name, observation mode) of each task a definition makes."""
    modes = entry.get("modes") or ["state"]
    return [(name if m == "state" else name + PIXEL_SUFFIX, m) for m in modes]


def read_task_file(path: str | Path) -> dict[str, dict]:
    """The task definitions of a YAML file: either a mapping NAME -> definition, or a sweep
    config whose ``task_definitions:`` holds them."""
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text())
    except OSError as e:
        raise UserError(f"cannot read task file {str(p)!r}: {e.strerror or e}") from None
    except yaml.YAMLError as e:
        raise UserError(f"task file {str(p)!r} is not valid YAML: "
                        f"{str(e).splitlines()[0]}") from None
    if isinstance(data, dict) and "task_definitions" in data:
        return check_definitions(data["task_definitions"], f"{p.name}:task_definitions")
    return check_definitions(data, p.name)


# name -> definition; the built-ins first, then whatever add_definitions merged over them.
DEFINITIONS: dict[str, dict] = read_task_file(BUILTIN_FILE)
# Where each definition came from ("built-in" or the file / config key that added it).
ORIGIN: dict[str, str] = dict.fromkeys(DEFINITIONS, "built-in")
# The built-in definitions as read (add_definitions adds to or replaces entries of DEFINITIONS).
BUILTIN: dict[str, dict] = dict(DEFINITIONS)
# family -> whether it has an expert (`cmil-bench demos --task FAMILY` collects its demos);
# families without one read recorded datasets (Kitchen, Baoding: the paper's demos; Adroit: D4RL's).
FAMILIES: dict[str, bool] = {}
TASKS: dict[str, TaskEntry] = {}


def entries(defs: dict[str, dict]) -> dict[str, TaskEntry]:
    out = {}
    for fam, entry in defs.items():
        for name, mode in task_names(fam, entry):
            out[name] = TaskEntry(name, fam, mode, bool(entry.get("expert")))
    return out


def _refresh() -> None:
    FAMILIES.clear()
    FAMILIES.update({fam: bool(e.get("expert")) for fam, e in DEFINITIONS.items()})
    TASKS.clear()
    TASKS.update(entries(DEFINITIONS))


_refresh()


def merged(defs: dict[str, dict] | None) -> tuple[dict[str, TaskEntry], dict[str, bool]]:
    """(TASKS, FAMILIES) as they would be with ``defs`` merged over the current definitions; no
    state changes."""
    both = {**DEFINITIONS, **(defs or {})}
    return entries(both), {fam: bool(e.get("expert")) for fam, e in both.items()}


def add_definitions(defs: Any, where: str = "task_definitions") -> list[str]:
    """Check ``defs`` (NAME -> definition) and merge them over the current definitions, for
    this process. Returns the task names they make."""
    checked = check_definitions(defs, where)
    for name, entry in checked.items():
        DEFINITIONS[name] = entry
        ORIGIN[name] = where
    _refresh()
    from_registry = _registry_hook
    if from_registry is not None:
        from_registry(list(checked))
    return [n for fam, e in checked.items() for n, _ in task_names(fam, e)]


def add_task_file(path: str | Path) -> list[str]:
    """Merge the definitions of a YAML file (see ``read_task_file``); returns their task names."""
    p = Path(path)
    defs = read_task_file(p)
    return add_definitions(defs, where=str(p))


# Set by envs.registry (when imported) to forget the TaskSpecs built from replaced definitions.
_registry_hook = None


def task_entry(name: str) -> TaskEntry:
    if name not in TASKS:
        raise UserError(f"unknown task {name!r}; known tasks: {', '.join(sorted(TASKS))}")
    return TASKS[name]


def definition(family: str) -> dict:
    return DEFINITIONS[family]


def added_definition(name: str) -> dict | None:
    """The definition of task ``name``'s family when it is not the built-in one (a sweep config's
    ``task_definitions`` or a ``--tasks`` file added it or replaced the built-in entry), else None
    (also for a task unknown here). A run records it in its identity: a built-in task is named by
    its name alone, an added one is what its definition says, which may change under that name.
    The ``description`` is left out (``defining_part``)."""
    entry = TASKS.get(name)
    if entry is None:
        return None
    defined = defining_part(DEFINITIONS[entry.family])
    builtin = BUILTIN.get(entry.family)
    return None if builtin is not None and defining_part(builtin) == defined else defined


def defining_part(definition: dict) -> dict:
    """A definition less its ``description``: prose for ``cmil-bench list``, not part of what a
    run is, so rewording it does not make finished runs of the task a different run."""
    return {k: v for k, v in definition.items() if k != "description"}
