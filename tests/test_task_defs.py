"""Tasks as data: envs/tasks.yaml against envs/task_schema.yaml, refusals of bad definitions, the
locomotion tasks, and a task the project does not ship (gymnasium's MountainCarContinuous-v0)
defined in a sweep config and run through `cmil-bench run` and the Snakefile."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

os.environ.setdefault("MUJOCO_GL", "egl")

from cmil_bench import sweep  # noqa: E402
from cmil_bench.errors import UserError  # noqa: E402
from envs import catalog  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "config" / "schema.yaml"
LOCOMOTION = {  # task -> (env id, state dim, action dim, D4RL random and expert references)
    "hopper": ("Hopper-v5", 11, 3, -20.272305, 3234.3),
    "walker2d": ("Walker2d-v5", 17, 6, 1.629008, 4592.3),
    "halfcheetah": ("HalfCheetah-v5", 17, 6, -280.178953, 12135.0),
    "ant": ("Ant-v5", 105, 8, -325.6, 3879.7),
}
# A task the project does not ship: reach the hill top of MountainCarContinuous-v0 in 200 steps.
CAR = {
    "description": "gymnasium MountainCarContinuous-v0, 200 steps",
    "env_id": "MountainCarContinuous-v0",
    "episode_steps": 200,
    "success": None,
    "eval_episodes": 2,
}


def _cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO), MUJOCO_GL="egl")
    return subprocess.run([sys.executable, "-m", "cmil_bench.cli", *args], capture_output=True,
                          text=True, env=env, cwd=cwd, timeout=600)


# ------------------------------------------------------------------ the built-in definitions


def test_builtin_definitions_make_every_task():
    defs = catalog.read_task_file(catalog.BUILTIN_FILE)
    assert set(defs) == {"pointmaze-umaze", "fetch-push", "kitchen-mixed", "baoding", "door",
                         "hammer", "pen", "relocate", *LOCOMOTION}
    for fam in defs:
        assert {fam, fam + "-pixels"} <= set(catalog.TASKS)
        assert catalog.task_entry(fam + "-pixels") == catalog.TaskEntry(
            fam + "-pixels", fam, "pixels", fam in ("pointmaze-umaze", "fetch-push", *LOCOMOTION))


@pytest.mark.slow  # starts a process
def test_definitions_plan_without_a_simulator():
    """Reading the definitions imports neither gymnasium nor MuJoCo (the Snakefile's dry run)."""
    code = ("import sys; import envs.catalog as c; c.task_entry('hopper-pixels'); "
            "bad = [m for m in ('gymnasium', 'mujoco', 'torch', 'minari') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=dict(os.environ, PYTHONPATH=str(REPO)), timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.parametrize("task", sorted(LOCOMOTION))
def test_locomotion_task(task):
    from envs.registry import get_task, make_env

    env_id, obs_dim, act_dim, lo, hi = LOCOMOTION[task]
    st, px = get_task(task), get_task(task + "-pixels")
    assert (st.env_id, st.max_episode_steps, st.expert) == (env_id, 1000, f"experts/{task}.pt")
    assert (st.ref_random_return, st.ref_demo_return) == (lo, hi)
    assert st.demo_source == px.demo_source == f"minari:cmil-bench/{task}/expert-v0"
    assert not st.episode_success([{"success": True}] * 5)  # scored by return: no success rule
    env = make_env(st, seed=0)
    try:
        assert env.observation_space.shape == (obs_dim,) and env.action_space.shape == (act_dim,)
        assert np.allclose(env.action_space.low, -1) and np.allclose(env.action_space.high, 1)
        assert env.spec.max_episode_steps == 1000
    finally:
        env.close()
    env = make_env(px, seed=0)
    try:
        obs, _ = env.reset(seed=0)
        assert obs.shape == (64, 64, 3) and obs.dtype == np.uint8 and obs.std() > 5
    finally:
        env.close()


def test_halfcheetah_episode_runs_1000_steps():
    from envs.registry import make_env

    env = make_env("halfcheetah", seed=0)
    try:
        env.reset(seed=0)
        steps, done = 0, False
        while not done:
            _, _, term, trunc, _ = env.step(np.zeros(6, dtype=np.float32))
            steps += 1
            done = term or trunc
        assert steps == 1000 and trunc and not term
    finally:
        env.close()


# ------------------------------------------------------------------ refusals


@pytest.mark.parametrize("change, needle", [
    ({"episde_steps": 10}, "unknown key 'episde_steps' in 'tasks.car' (did you mean 'episode_steps'?)"),
    ({"episode_steps": 0}, "key 'tasks.car.episode_steps': 0 is less than the minimum of 1"),
    ({"modes": ["state", "depth"]}, "key 'tasks.car.modes[1]'"),
    ({"success": {"sometimes": "success"}}, "key 'tasks.car.success': {'sometimes': 'success'} is no "
                                            "success rule"),
    ({"flatten": "not a name"}, "key 'tasks.car.flatten': 'not a name' is not a dotted name"),
    ({"references": {"random": 1.0, "demo": 1.0}}, "random and demo are equal"),
    ({"references": {"randm": 1.0}}, "unknown key 'randm' in 'tasks.car.references'"),
    ({"camera": "top"}, "key 'tasks.car.camera': 'top' is not of type 'object'"),
    ({"full_length_demos": "yes"}, "key 'tasks.car.full_length_demos': 'yes' is not of type 'boolean'"),
])
def test_bad_definitions_are_named(change, needle):
    entry = {**CAR, "demos": "minari:x/y-v0", **change}
    with pytest.raises(UserError) as exc:
        catalog.check_definitions({"car": entry}, "tasks")
    assert needle in str(exc.value) and "\n" not in str(exc.value)


def test_required_keys_and_names():
    with pytest.raises(UserError, match=r"key 'tasks.car': 'demos' is a required property"):
        catalog.check_definitions({"car": dict(CAR)}, "tasks")
    with pytest.raises(UserError, match="does not end in '-pixels'"):
        catalog.check_definitions({"car-pixels": {**CAR, "demos": "x"}}, "tasks")


@pytest.mark.slow  # starts a process
def test_bad_task_file_exits_2_with_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"car": {**CAR, "demos": "minari:x/y-v0", "obs_mode": "state"}}))
    res = _cli("list", "--tasks", str(bad))
    assert res.returncode == 2 and res.stdout == ""
    assert res.stderr.strip() == ("cmil-bench list: error: unknown key 'obs_mode' in 'bad.yaml.car' "
                                  "(did you mean 'modes'?); known keys: " + ", ".join(
                                      sorted(yaml.safe_load(catalog.SCHEMA_FILE.read_text())["properties"])))


def test_sweep_config_refuses_a_bad_inline_task():
    config = yaml.safe_load((REPO / "config" / "default.yaml").read_text())
    config["task_definitions"] = {"car": {**CAR, "demos": "x", "episode_steps": "long"}}
    with pytest.raises(sweep.SweepConfigError, match="key 'task_definitions.car.episode_steps': 'long' is "
                                                     "not of type 'integer'"):
        sweep.check(config, SCHEMA)
    config["task_definitions"] = {"car": {**CAR, "demos": "x"}}
    config["tasks"] = ["car", "car-pixels"]
    with pytest.raises(sweep.SweepConfigError, match=r"key 'tasks\[1\]': unknown task 'car-pixels'"):
        sweep.check(config, SCHEMA)
    config["tasks"] = ["car", "fetch-push"]
    with pytest.raises(sweep.SweepConfigError, match="task 'car' has no budget"):
        sweep.check(config, SCHEMA)  # an inline task needs its matched budget like any other
    config["budgets"]["car"] = {"total_steps": 1000, "eval_every": 500}
    sweep.check(config, SCHEMA)
    assert "car" not in catalog.TASKS  # checking a config changes nothing in this process


# ------------------------------------------------------------------ Python only where YAML cannot say it


@pytest.fixture()
def own_catalog(monkeypatch):
    """The task definitions and built specs as copies, restored after the test: definitions it
    adds (``add_definitions``, ``--tasks`` in this process) leave the other tests' alone."""
    from envs import registry

    monkeypatch.setattr(catalog, "DEFINITIONS", dict(catalog.DEFINITIONS))
    monkeypatch.setattr(catalog, "ORIGIN", dict(catalog.ORIGIN))
    monkeypatch.setattr(catalog, "TASKS", dict(catalog.TASKS))
    monkeypatch.setattr(catalog, "FAMILIES", dict(catalog.FAMILIES))
    monkeypatch.setattr(registry, "TASKS", {})


def test_dotted_names_and_merging_over_builtins(own_catalog):
    from envs import registry

    names = catalog.add_definitions({
        "car": {**CAR, "demos": "x", "success": {"function": "envs.adroit:GoalStepsSuccess",
                                                 "kwargs": {"min_steps": 2}},
                "flatten": "numpy.ravel", "expert": "envs.experts:PointMazeExpert"},
        "pen": {**catalog.DEFINITIONS["pen"], "episode_steps": 7},  # replaces the built-in pen
    })
    assert names == ["car", "pen", "pen-pixels"]
    car = registry.get_task("car")
    assert car.success_mode == "custom" and car.flatten is np.ravel
    assert car.episode_success([{"success": True}] * 3) and not car.episode_success([{"success": True}] * 2)
    assert registry.get_task("pen").max_episode_steps == 7
    from envs.collect import expert_factory
    from envs.experts import PointMazeExpert
    assert expert_factory(car) is PointMazeExpert
    catalog.add_definitions({"car": {**CAR, "demos": "x", "flatten": "envs.nowhere:flat"}})
    with pytest.raises(UserError, match=r"task 'car': flatten: cannot import 'envs.nowhere:flat'"):
        registry.get_task("car")


# ------------------------------------------------------------------ a task the project does not ship


def _pump(obs: np.ndarray) -> np.ndarray:
    """Push in the direction of motion: reaches the hill top in ~110 steps (return ~89)."""
    return np.array([1.0 if obs[1] >= 0 else -1.0], dtype=np.float32)


def _write_car_dataset(root: Path, dataset_id: str, episodes: int) -> Path:
    """A small Minari dataset written with Minari's own API (no project code)."""
    import gymnasium as gym
    import minari
    from minari.data_collector import EpisodeBuffer

    env = gym.make("MountainCarContinuous-v0", max_episode_steps=CAR["episode_steps"])
    buffers = []
    for i in range(episodes):
        obs, _ = env.reset(seed=i)
        rows, acts, rews, term, trunc = [obs], [], [], False, False
        while not (term or trunc):
            a = _pump(obs)
            obs, r, term, trunc, _ = env.step(a)
            rows.append(obs)
            acts.append(a)
            rews.append(r)
        T = len(acts)
        buffers.append(EpisodeBuffer(
            id=i, seed=i, observations=np.stack(rows).astype(np.float32), actions=np.stack(acts),
            rewards=np.asarray(rews, dtype=np.float64), infos={},
            terminations=np.eye(1, T, T - 1, dtype=bool)[0] & term,
            truncations=np.eye(1, T, T - 1, dtype=bool)[0] & trunc))
    os.environ["MINARI_DATASETS_PATH"] = str(root)
    try:
        minari.create_dataset_from_buffers(dataset_id=dataset_id, buffer=buffers, env=env.spec,
                                           eval_env=env.spec, algorithm_name="pump", author={"test"},
                                           description="MountainCarContinuous pump demos",
                                           author_email={"test@localhost"}, code_permalink="tests")
    finally:
        os.environ.pop("MINARI_DATASETS_PATH", None)
    env.close()
    return root / dataset_id


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_unshipped_gymnasium_task_runs_through_cli_and_snakefile(tmp_path, monkeypatch):
    import pandas as pd

    monkeypatch.delenv("MINARI_DATASETS_PATH", raising=False)
    data = _write_car_dataset(tmp_path / "minari", "test/car/pump-v0", episodes=4)
    results = tmp_path / "results"
    config = {
        "results": str(results),
        "task_definitions": {"car": {**CAR, "demos": f"minari:{data}"}},
        "algos": ["bc"], "tasks": ["car"], "demos": [2], "seeds": [0], "report_reps": 50,
        "algo_settings": {"bc": {"preset": "smoke", "demos": [2]}},
        "budgets": {"car": {"total_steps": 200, "eval_every": 100}},
        "task_settings": None,
    }
    cfg_file = tmp_path / "car.yaml"
    cfg_file.write_text(yaml.safe_dump(config))

    # 1. `cmil-bench run` with the sweep config as the task file.
    res = _cli("run", "--tasks", str(cfg_file), "--algo", "bc", "--task", "car", "--demos", "2",
               "--seed", "0", "--out", str(tmp_path / "run"), "--preset", "smoke", "--progress", "off")
    assert res.returncode == 0, res.stderr[-2000:]
    m = pd.read_csv(tmp_path / "run" / "metrics.csv")
    assert len(m) >= 1 and np.isfinite(m["norm_score"]).all() and (m["eval_success"] == 0).all()

    # 2. The Snakefile, one run's metrics.csv as the target.
    work = tmp_path / "repo"
    work.mkdir()
    shutil.copy(REPO / "Snakefile", work)
    shutil.copytree(REPO / "config", work / "config")
    target = results / "runs" / "bc" / "car" / "d2" / "s0" / "metrics.csv"
    env = dict(os.environ, PYTHONPATH=str(REPO), MUJOCO_GL="egl")
    res = subprocess.run(["snakemake", "--cores", "1", str(target), "--configfile", str(cfg_file)],
                         cwd=work, env=env, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    assert yaml.safe_load((results / "task_definitions.yaml").read_text()) == config["task_definitions"]
    m2 = pd.read_csv(target)
    assert np.isfinite(m2["norm_score"]).all()
    # The same request gives the same metrics (same seed, same machine).
    pd.testing.assert_series_equal(m["norm_score"], m2["norm_score"])


# ------------------------------------------------------------------ an added task's definition is identity


def test_added_definitions_are_told_from_builtin_ones(own_catalog):
    assert catalog.added_definition("pen") is None and catalog.added_definition("nope") is None
    catalog.add_definitions({"pen": dict(catalog.BUILTIN["pen"])})  # the built-in one again
    assert catalog.added_definition("pen-pixels") is None
    pen7 = {**catalog.BUILTIN["pen"], "episode_steps": 7}
    catalog.add_definitions({"pen": pen7, "car": {**CAR, "demos": "x"}})
    assert catalog.added_definition("pen-pixels") == catalog.defining_part(pen7)
    car = catalog.added_definition("car")
    assert car == catalog.defining_part({**CAR, "demos": "x"}) and "description" not in car
    # A reworded description is not a different task.
    catalog.add_definitions({"pen": {**catalog.BUILTIN["pen"], "description": "reworded"}})
    assert catalog.added_definition("pen") is None


def test_identity_differences_name_the_changed_key_of_a_task_definition():
    from cmil_bench.run import identity_differences

    rec = {"algo": "bc", "variant": "bc", "task": "car", "n_demos": 2, "demo_source": "s",
           "seed": 0, "config": {"lr": 0.001}, "task_definition": {**CAR, "demos": "s"}}
    req = {**rec, "task_definition": {**CAR, "demos": "s", "episode_steps": 100}}
    assert [d[:2] for d in identity_differences(rec, req)] == [("task_definition.episode_steps", 200)]
    assert identity_differences(rec, dict(rec)) == []
    builtin = {k: v for k, v in rec.items() if k != "task_definition"}  # no definition recorded
    assert [d[0] for d in identity_differences(builtin, req)] == ["task_definition"]
    assert [d[0] for d in identity_differences(rec, builtin)] == ["task_definition"]
    assert identity_differences(builtin, dict(builtin)) == []
    # A folder written when the description was part of the identity still matches.
    old = {**rec, "task_definition": {**CAR, "demos": "s", "description": "old words"}}
    new = {**rec, "task_definition": catalog.defining_part({**CAR, "demos": "s"})}
    assert identity_differences(old, new) == []


@pytest.mark.slow  # trains (BC, smoke preset)
def test_changed_inline_task_in_the_same_folder_is_refused(tmp_path, monkeypatch, own_catalog, capsys):
    from helpers import assert_clean_failure, call_cli

    monkeypatch.delenv("MINARI_DATASETS_PATH", raising=False)
    data = _write_car_dataset(tmp_path / "minari", "test/car/pump-v0", episodes=2)
    car = {**CAR, "demos": f"minari:{data}", "references": {"random": -50.0, "demo": 90.0}}
    out = tmp_path / "run"

    def run(definition):
        tasks = tmp_path / "tasks.yaml"
        tasks.write_text(yaml.safe_dump({"task_definitions": {"car": definition}}))
        return call_cli(["run", "--tasks", str(tasks), "--algo", "bc", "--task", "car",
                         "--demos", "2", "--seed", "0", "--out", str(out), "--preset", "smoke",
                         "--progress", "off"], capsys)

    rc, _, err = run(car)
    assert rc == 0, err
    recorded = json.loads((out / "config.json").read_text())
    assert recorded["task_definition"] == recorded["identity"]["task_definition"] == \
        catalog.defining_part(car)
    metrics = (out / "metrics.csv").read_bytes()
    rc, _, err = run(dict(car))  # the same definition: the finished run is left alone
    assert rc == 0 and "already complete" in err
    rc, _, err = run({**car, "description": "reworded"})  # prose only: still the same run
    assert rc == 0 and "already complete" in err
    rc, _, err = run({**car, "episode_steps": 100})
    line = assert_clean_failure(rc, err, "task_definition.episode_steps")
    assert "folder 200, requested 100" in line
    assert (out / "metrics.csv").read_bytes() == metrics
