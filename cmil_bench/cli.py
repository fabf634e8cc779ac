"""The ``cmil-bench`` command line: demos, run, expert, evaluate, report, status, list."""

from __future__ import annotations

import argparse
import os
import sys

from cmil_bench.errors import TrainingDiverged, UserError

EPILOG = """examples:
  cmil-bench demos --task pointmaze-umaze --episodes 50 --root results/datasets
  cmil-bench demos --inspect minari:cmil-bench/pointmaze-umaze/expert-v0
  cmil-bench demos --task baoding --source cmil-shadowhand --path DEMOS --model PDDM_DIR
  cmil-bench run --algo bc --task pointmaze-umaze --demos 10 --seed 0 --out results/runs/x
  cmil-bench run --tasks my_tasks.yaml --algo bc --task my-task --demos 4 --out results/runs/y
  cmil-bench expert --task hopper            # SAC expert -> experts/hopper.pt + card
  cmil-bench evaluate results/runs/dac/fetch-push/d10/s0 --episodes 200
  cmil-bench report --runs results/runs --out results/report
  cmil-bench status results
"""


def _add_demos(sub) -> None:
    p = sub.add_parser(
        "demos", help="collect expert demos into a local Minari dataset, or inspect a demo source",
        description="Collect demonstrations of a task's scripted expert into a local Minari dataset "
                    "(no network), or with --inspect print a summary of any supported demo source: "
                    "a Minari dataset id or path, a D4RL-layout HDF5 file, or a folder of "
                    "DreamerV2 .npz episodes.")
    p.add_argument("--task", help="task name (see `cmil-bench list`)")
    p.add_argument("--episodes", type=int, default=50, help="successful episodes to keep (default 50)")
    p.add_argument("--seed", type=int, default=0, help="first reset seed (episode i uses seed+i)")
    p.add_argument("--root", help="dataset root (default: $MINARI_DATASETS_PATH, else ~/.minari/datasets)")
    p.add_argument("--dataset-id", help="dataset id (default: the task's demo source)")
    p.add_argument("--pixels", action="store_true", help="also record 64x64 frames (key 'pixels')")
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset")
    p.add_argument("--source", help="a named demo source of the task to convert (e.g. kitchen-paper)")
    p.add_argument("--path", help="where the named --source lives")
    p.add_argument("--model", metavar="DIR",
                   help="baoding tasks: the folder of the task's MuJoCo model (a copy of common/pddm of "
                        "github.com/victorkolev/cmil); remembered in the dataset root for the runs; "
                        "'download' fetches it (network). Alone (no --source) it only sets the model")
    p.add_argument("--inspect", metavar="SOURCE", help="print a summary of SOURCE and exit")


def _add_run(sub) -> None:
    p = sub.add_parser(
        "run", help="train and evaluate one (algorithm, task, demos, seed)",
        description="Train one algorithm on one task with N demos and one seed. Writes "
                    "OUT/config.json at the start, OUT/progress.csv and OUT/checkpoint.pt at each "
                    "evaluation, and OUT/metrics.csv only when the run completes. Started again "
                    "after a crash, it resumes from the last checkpoint.")
    p.add_argument("--algo", required=True, help="bc | gail | dac | vmail | cmil")
    p.add_argument("--task", required=True, help="task name (see `cmil-bench list`)")
    p.add_argument("--demos", type=int, required=True, help="number of demo episodes (chosen from the seed)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="run folder")
    p.add_argument("--preset", help="named hyperparameter presets of the algorithm, applied left to "
                                    "right over its defaults (e.g. cpu, or cpu,pixels)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one hyperparameter of the algorithm's Config (repeatable; wins "
                        "over every preset)")
    p.add_argument("--demo-source", help="override the task's demo source (minari:ID, d4rl:FILE, npz:DIR)")
    p.add_argument("--variant", help="name of this configuration in tables (default: the algorithm)")
    p.add_argument("--force", action="store_true", help="redo a finished run from scratch")
    p.add_argument("--progress", choices=["auto", "on", "off"], default="auto",
                   help="progress bar (auto: only on a terminal)")


def _add_expert(sub) -> None:
    p = sub.add_parser(
        "expert", help="train a task's expert with SAC; write its policy file and card",
        description="Train SAC (algorithms/sac_expert.py, Haarnoja et al.'s defaults) on the task's "
                    "reward in a resumable run folder, then write the actor of its best evaluation as "
                    "the policy file the task names (experts/<task>.pt) and a card beside it (.md): "
                    "command, seed, env steps, wall time, the file's return over --episodes fresh "
                    "episodes, target, learning curve. `cmil-bench demos --task T` then rolls the "
                    "file out. Started again after a kill, training resumes.")
    p.add_argument("--task", required=True, help="a state task (e.g. hopper)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="run folder (default results/experts/<task>/s<seed>)")
    p.add_argument("--policy",
                   help="policy file to write (default: the task's expert, e.g. experts/hopper.pt)")
    p.add_argument("--episodes", type=int, default=50,
                   help="episodes the card scores the file on (default 50)")
    p.add_argument("--preset", help="presets of the trainer (smoke)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one hyperparameter of the trainer (e.g. total_steps=300000)")
    p.add_argument("--from-checkpoint", action="store_true",
                   help="do not train: export the run folder's last checkpoint, finished or not")
    p.add_argument("--force", action="store_true", help="train again from scratch")
    p.add_argument("--progress", choices=["auto", "on", "off"], default="auto",
                   help="progress bar (auto: only on a terminal)")


def _add_evaluate(sub) -> None:
    p = sub.add_parser(
        "evaluate", help="score runs' last checkpoints again on more (held-out) episodes",
        description="Rebuild each run's evaluation policy from OUT/checkpoint.pt and score it on "
                    "--episodes episodes reset with seeds --seed-base + i (by default held out: "
                    "runs evaluate on seeds 1000000 + i), with the run's own norm_score "
                    "references. Prints a Markdown table; --csv also writes the rows. Writes "
                    "nothing into the run folders.")
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run folders (with checkpoint.pt)")
    p.add_argument("--episodes", type=int, default=200, help="episodes per run (default 200)")
    p.add_argument("--seed-base", type=int, default=2_000_000,
                   help="reset seed of the first episode (default 2000000; 1000000 with the run's "
                        "episode count reproduces its last evaluation)")
    p.add_argument("--policy", default="eval",
                   help="eval (what the run's evaluations scored) or, for DAC, live (its training "
                        "actor rather than the moving average)")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument("--csv", help="also write the rows to this CSV file")


def _add_report(sub) -> None:
    p = sub.add_parser("report", help="rliable aggregates, tables and figures from finished runs",
                       description="Collect every finished run under --runs and write tables "
                                   "(Markdown, LaTeX), figures (PNG, PDF) and summary.json to --out.")
    from analysis.report import add_arguments
    add_arguments(p)


def _add_status(sub) -> None:
    p = sub.add_parser("status", help="one table of a sweep: finished, in progress, failed, "
                                      "not started runs per algorithm and task",
                       description="Read a sweep's results folder (runs/ and logs/runs/) and print, "
                                   "per algorithm and task, how many runs finished, are in progress, "
                                   "failed and have not started, then one line per run in progress "
                                   "(last evaluation, time since its checkpoint) and per failed run "
                                   "(the last line of its log). See analysis/status.py for the rules.")
    from analysis.status import add_arguments
    add_arguments(p)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cmil-bench", description="CMIL and imitation-learning baselines under one harness.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_demos(sub)
    _add_run(sub)
    _add_expert(sub)
    _add_evaluate(sub)
    _add_report(sub)
    _add_status(sub)
    p = sub.add_parser("list", help="list tasks and algorithms, or what a preset changes",
                       description="List the registered tasks (with mode and env id) and algorithms. "
                                   "With --algo A: A's presets; with --preset P too: every key the "
                                   "preset(s) change against A's reference defaults (key, default, "
                                   "preset value).")
    p.add_argument("--algo", help="an algorithm: list its presets")
    p.add_argument("--preset", help="preset names of --algo, comma-separated, applied left to right")
    for name in ("demos", "run", "expert", "evaluate", "list"):
        _add_tasks_option(sub.choices[name])
    return parser


def _add_tasks_option(p) -> None:
    p.add_argument("--tasks", action="append", default=[], metavar="FILE",
                   help="YAML file of task definitions (envs/task_schema.yaml) merged over the "
                        "built-in ones (envs/tasks.yaml); a sweep config's task_definitions: "
                        "works too (repeatable)")


def _cmd_demos(args) -> int:
    if args.inspect:
        from envs.datasets import inspect_source
        print(inspect_source(args.inspect))
        return 0
    if not args.task:
        raise UserError("demos: give --task T (to collect) or --inspect SOURCE")
    if args.episodes <= 0:
        raise UserError(f"demos: --episodes must be positive, got {args.episodes}")
    if args.model:
        from envs.baoding import set_model
        from envs.registry import get_task
        if get_task(args.task).family != "baoding":
            raise UserError(f"demos: --model is for the baoding tasks, not {args.task!r}")
        model = set_model(args.model, root=args.root)
        if not args.source:
            print(model)
            return 0
    if args.source:
        from envs.sources import convert_named_source
        path = convert_named_source(args.task, args.source, args.path, root=args.root,
                                    dataset_id=args.dataset_id, overwrite=args.overwrite)
    else:
        from envs.collect import collect_demos
        path = collect_demos(args.task, args.episodes, seed=args.seed, root=args.root,
                             dataset_id=args.dataset_id, pixels=args.pixels, overwrite=args.overwrite)
    print(path)
    return 0


def _cmd_run(args) -> int:
    from cmil_bench.config import parse_overrides
    from cmil_bench.run import execute

    show = {"auto": None, "on": True, "off": False}[args.progress]
    path = execute(algo=args.algo, task=args.task, n_demos=args.demos, seed=args.seed, out=args.out,
                   preset=args.preset, overrides=parse_overrides(args.overrides),
                   demo_source=args.demo_source, variant=args.variant, force=args.force,
                   show_progress=show)
    print(path)
    return 0


def _cmd_expert(args) -> int:
    from cmil_bench.config import parse_overrides
    from cmil_bench.expert import train_expert

    show = {"auto": None, "on": True, "off": False}[args.progress]
    policy, card = train_expert(task=args.task, seed=args.seed, out=args.out, policy=args.policy,
                                episodes=args.episodes, preset=args.preset,
                                overrides=parse_overrides(args.overrides), force=args.force,
                                from_checkpoint=args.from_checkpoint, show_progress=show)
    print(policy)
    print(card)
    return 0


def _cmd_evaluate(args) -> int:
    import pandas as pd

    from cmil_bench.evaluate import evaluate_checkpoint, markdown_table
    from cmil_bench.run import atomic_write_text

    results = [evaluate_checkpoint(r, episodes=args.episodes, seed_base=args.seed_base,
                                   which=args.policy, device=args.device) for r in args.runs]
    print(markdown_table(results))
    if args.csv:
        atomic_write_text(args.csv, pd.DataFrame(results).to_csv(index=False))
    return 0


def _fmt_value(v) -> str:
    if isinstance(v, (tuple, list)):
        return str(tuple(v))
    return str(v)


def _list_presets(algo: str, preset: str | None) -> int:
    """What the presets of ``algo`` change against its Config defaults (the reference's)."""
    from algorithms import get_algorithm
    from cmil_bench.config import preset_changes

    mod = get_algorithm(algo)
    presets = getattr(mod, "PRESETS", {}) or {}
    if not preset:
        print(f"{algo}: presets {', '.join(sorted(presets)) or 'none'} "
              f"(`cmil-bench list --algo {algo} --preset NAME` shows what one changes)")
        return 0
    rows = preset_changes(mod.Config, presets, preset, algo)
    print(f"{algo} --preset {preset}: {len(rows)} keys differ from the reference defaults")
    table = [("key", "default", "preset")] + [(k, _fmt_value(d), _fmt_value(v)) for k, d, v in rows]
    widths = [max(len(r[i]) for r in table) for i in range(2)]
    for k, d, v in table:
        print(f"  {k:{widths[0]}s}  {d:{widths[1]}s}  {v}")
    return 0


def _cmd_list(args) -> int:
    from algorithms import available
    from envs.registry import get_task, list_tasks

    if args.preset and not args.algo:
        raise UserError("--preset needs --algo (e.g. cmil-bench list --algo cmil --preset cpu)")
    if args.algo:
        return _list_presets(args.algo, args.preset)

    print("tasks:")
    for name in list_tasks():
        t = get_task(name)
        print(f"  {name:28s} {t.obs_mode:6s} {t.env_id:28s} {t.max_episode_steps:4d} steps  "
              f"demos: {t.demo_source}")
    print("algorithms:", ", ".join(available()))
    return 0


def check_mujoco_gl(chosen_by_user: bool = True) -> None:
    """Import MuJoCo now, turning a bad or unusable ``MUJOCO_GL`` into one clear UserError.

    MuJoCo reads ``MUJOCO_GL`` when it is first imported, and every environment imports it (even
    state tasks). An unknown value, or a backend whose library is missing (no EGL, no OSMesa),
    makes that import raise deep inside gymnasium; this names the variable instead. When the user
    did not choose ``MUJOCO_GL`` (the CLI's default ``egl``) and EGL is unusable, rendering is
    switched off instead: state tasks run, pixel tasks stop with a clear error when they render.
    """
    try:
        import mujoco  # noqa: F401
        return
    except Exception as e:
        gl = os.environ.get("MUJOCO_GL")
        err = f"{type(e).__name__}: {e}"
    if not chosen_by_user:
        os.environ["MUJOCO_GL"] = "disable"
        try:
            import mujoco  # noqa: F401,F811
        except Exception:
            pass
        else:
            print(f"[cmil-bench] MuJoCo cannot render with MUJOCO_GL={gl!r} here ({err}); "
                  "rendering is off (state tasks only)", file=sys.stderr)
            return
    raise UserError(
        f"cannot load MuJoCo with MUJOCO_GL={gl!r} ({err}). Use MUJOCO_GL=egl (GPU or EGL) or "
        "MUJOCO_GL=osmesa (software rendering) where that library is installed; state tasks "
        "also run with MUJOCO_GL=disable")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    gl_chosen = "MUJOCO_GL" in os.environ
    os.environ.setdefault("MUJOCO_GL", "egl")
    try:
        for path in getattr(args, "tasks", None) or []:
            from envs.catalog import add_task_file
            add_task_file(path)
        if args.command in ("demos", "run", "expert", "evaluate", "list"):
            check_mujoco_gl(chosen_by_user=gl_chosen)
        if args.command == "demos":
            return _cmd_demos(args)
        if args.command == "run":
            return _cmd_run(args)
        if args.command == "expert":
            return _cmd_expert(args)
        if args.command == "evaluate":
            return _cmd_evaluate(args)
        if args.command == "status":
            from analysis.status import run_from_args as status_from_args
            return status_from_args(args)
        if args.command == "report":
            from analysis.report import run_from_args
            return run_from_args(args) or 0
        if args.command == "list":
            return _cmd_list(args)
    except UserError as e:
        print(f"cmil-bench {args.command}: error: {e}", file=sys.stderr)
        return 2
    except TrainingDiverged as e:
        print(f"cmil-bench {args.command}: training diverged: {e}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        hint = (" (run the same command again to resume from the last checkpoint)"
                if args.command in ("run", "expert") else "")
        print(f"cmil-bench {args.command}: interrupted{hint}", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
