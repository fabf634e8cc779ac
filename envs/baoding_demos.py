"""The CMIL paper's 20 ShadowHand Baoding demos: reading, replaying and converting them.

``cmil-bench demos --task baoding --source cmil-shadowhand --path DIR`` (``convert``) turns the
reference's episodes (public repository victorkolev/cmil, folder data/shadowhand; no licence, so
never shipped: ``--path`` names a local copy, and without it they are downloaded into
``$CMIL_BENCH_CACHE/cmil-shadowhand`` on a machine with network) into the local Minari dataset
``cmil-bench/baoding/paper-v0`` with ``Dict{state, pixels}`` observations:

* state: each file's recorded 40-d ``obs`` rows (121: the reset, then 120 steps), unchanged;
* actions: ``action[1:]`` (row 0 is DreamerV2's zero placeholder), 120 x 24 in [-1, 1];
* rewards: the task's reward (``envs.baoding.reward_terms``) of the recorded states, since the
  files carry no reward labels (their ``reward`` is all zeros); the mean return is the demo
  reference of norm_score (``ref_max_score``);
* pixels: 64x64 frames re-rendered in this port from the recorded states (hand joints and ball
  positions; the balls are plain spheres, so their unrecorded orientation does not show, and the
  targets are invisible), with the renderer and settings that the agent's ``baoding-pixels``
  environment uses. Why not the files' 128x128 frames, area-downsampled: they come from mujoco-py's
  renderer with shadows, reflections and anti-aliasing that the agent's frames do not have, so a
  discriminator (GAIL, DAC, V-MAIL, CMIL) could tell demo frames from agent frames by the lighting
  alone. Why not frames of an action replay: the balls drift away from the recorded ones in some
  replays (see ``replay_demo``). The downsampled reference frames serve as a check: the metadata
  keeps each episode's mean absolute difference to them (``cmil_frame_mae``);
* infos: ``dist`` (mean ball-to-target distance), ``dropped`` and ``success`` (true on the last
  row of a successful episode), T+1 rows.

``replay_demo`` measures how faithful the port is: it replays a demo's actions open-loop from the
reset (which is the demos' first recorded state) and compares the simulated 40-d states with the
recorded ones step by step (benchmarks/baoding_replay.py prints the table; the dataset's metadata
keeps a summary).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cmil_bench.errors import UserError
from envs import baoding as B

DEMO_REPO = "victorkolev/cmil"
DEMO_COMMIT = "ddb448dfd81e9128953574db5b9ab285f2ae7d10"
DEMO_FOLDER = "data/shadowhand"
DEMO_FILES = (
    "20210209T205252-8ec07a17292e421191b8e03d2370bc36-121.npz",
    "20210209T205317-860ab8c01f4b44ff8dc38a3002279862-121.npz",
    "20210209T205329-11475280ee0b442a92ea332195b460a2-121.npz",
    "20210209T205353-0718d097d83349509fc75d2c3b19fd1d-121.npz",
    "20210209T205405-7e497e45adb94174918748ed7610f5b7-121.npz",
    "20210209T205417-84f9a1e1c51049bebf008d606d9468c0-121.npz",
    "20210209T205430-78978f1a20e74cbfb4088fcedab3911f-121.npz",
    "20210209T205501-6897f68e704d4ef7a5ee5ab015714822-121.npz",
    "20210209T205513-4a83be0a9af3480697b9af72b7db9582-121.npz",
    "20210209T205525-122e466ba04447d09fa51f488862f5f9-121.npz",
    "20210209T205537-c01ef7d707d04c98be7b2ca97196c040-121.npz",
    "20210209T205549-f04f2c3ee38f4388a35412ddb964d2fd-121.npz",
    "20210209T205601-d26f7e858ef14887814d275672676f8e-121.npz",
    "20210209T205614-de64597fdce24c6bb138e43b8fb3dcea-121.npz",
    "20210209T205626-daf43a80be014faea8113b852a7b8037-121.npz",
    "20210209T205638-230efa905a4f43bb96b11e7d8ee3f1da-121.npz",
    "20210209T205650-bdf20fc06a284a2fb41381fbc17b083c-121.npz",
    "20210209T205722-e8e0e4d930f84c2f87f29df5c5990b15-121.npz",
    "20210209T205735-3d24d499aadd4283b18958c52721a6ae-121.npz",
    "20210209T205747-5c76bc378df24de59ad18db6e54f35a1-121.npz",
)
ROWS = B.EPISODE_STEPS + 1
# Steps at which replay_demo reports the drift curve.
CURVE_STEPS = (1, 10, 30, 60, 90, 120)
BALL_DRIFT = 0.01  # m: a replay's ball "has left" the recorded one beyond this
# The six "velocity" entries of the observation (see envs/baoding.py: hand joint and ball spin
# velocities among them, which the balls' contacts make chaotic).
VELOCITY_COLUMNS = [27, 28, 29, 33, 34, 35]


def demo_url(name: str) -> str:
    return f"https://raw.githubusercontent.com/{DEMO_REPO}/{DEMO_COMMIT}/{DEMO_FOLDER}/{name}"


def download_demos(dest: str | Path | None = None) -> Path:
    """Fetch the 20 demos (network) into ``dest`` (default ``$CMIL_BENCH_CACHE/cmil-shadowhand``)."""
    from envs.sources import cache_dir, fetch_files

    dest = Path(dest) if dest is not None else cache_dir() / "cmil-shadowhand"
    return fetch_files({n: demo_url(n) for n in DEMO_FILES}, dest,
                         f"without network, copy the folder {DEMO_FOLDER} of github.com/{DEMO_REPO} "
                         "to this machine and pass --path DIR")


def read_demo(path: Path) -> dict:
    """One episode file: ``obs`` (121, 40), ``actions`` (120, 24), ``image`` (121, 128, 128, 3) or
    None. Raises UserError on a file that is not a Baoding demo."""
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in ("obs", "action", "image") if k in z.files}
    except Exception as exc:  # zip/zlib/format errors of a damaged file
        raise UserError(f"cmil-shadowhand: cannot read {path}: {type(exc).__name__}: {exc}") from None
    obs, act = data.get("obs"), data.get("action")
    if obs is None or act is None:
        raise UserError(f"cmil-shadowhand: {path} lacks 'obs' or 'action' (a Baoding demo has both)")
    if obs.ndim != 2 or obs.shape[1] != B.OBS_DIM or act.shape != (obs.shape[0], B.N_HAND) or len(obs) < 2:
        raise UserError(f"cmil-shadowhand: {path} has obs {obs.shape} and action {act.shape}; a Baoding "
                        f"demo has (T+1, {B.OBS_DIM}) and (T+1, {B.N_HAND})")
    if not (np.all(np.isfinite(obs)) and np.all(np.isfinite(act))):
        raise UserError(f"cmil-shadowhand: {path} has non-finite values")
    image = data.get("image")
    return {"obs": obs.astype(np.float64), "actions": act[1:].astype(np.float64),
            "image": image if image is not None and image.shape[0] == len(obs) else None,
            "file": path.name}


def demo_files(path: str | Path) -> list[Path]:
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise UserError(f"cmil-shadowhand: no such folder {folder} (expected the paper's Baoding .npz demos)")
    files = sorted(p for p in folder.glob("*.npz") if p.is_file())
    if not files:
        raise UserError(f"cmil-shadowhand: folder {folder} holds no .npz episodes")
    return files


def demo_rewards(obs: np.ndarray) -> dict[str, np.ndarray]:
    """Per-step reward terms of a recorded episode (rows 1..T of ``obs``)."""
    return B.reward_terms(obs[1:])


def replay_demo(env, demo: dict) -> dict:
    """Replay ``demo``'s actions open-loop in ``env`` (a ``BaodingEnv``, unwrapped) from its reset.

    The reset state is the demos' first recorded state (hand and balls; ``start_error`` says how
    far it is from row 0). Returns the simulated states (T+1, 40), rewards, the per-step absolute
    error to the recorded states (up to a drop, which ends the replay), its summary (mean, max,
    per-part maxima: hand joints, velocity entries, targets, the curve of the mean
    error at ``CURVE_STEPS``, ball position error in metres, the first step at which a ball is more
    than ``BALL_DRIFT`` from its recorded position), the replay's return / success / drop step and
    the recorded states' return and success.
    """
    obs0, _ = env.reset()
    rec = demo["obs"]
    sim = [obs0]
    rewards, dists, drops = [], [], []
    drop_step = None
    for k, a in enumerate(demo["actions"], start=1):
        o, r, term, _, info = env.step(a)
        sim.append(o)
        rewards.append(r)
        dists.append(info["dist"])
        drops.append(info["dropped"])
        if term and drop_step is None:
            drop_step = k
        if term:
            break
    sim = np.asarray(sim)
    n = len(sim)
    err = np.abs(sim - rec[:n])
    ball = np.maximum(np.linalg.norm(sim[:, B.BALL1_POS] - rec[:n, B.BALL1_POS], axis=1),
                      np.linalg.norm(sim[:, B.BALL2_POS] - rec[:n, B.BALL2_POS], axis=1))
    away = np.flatnonzero(ball > BALL_DRIFT)
    rec_terms = demo_rewards(rec)
    rec_dist = 0.5 * (rec_terms["dist1"] + rec_terms["dist2"])
    return {
        "file": demo.get("file", ""),
        "states": sim,
        "rewards": np.asarray(rewards),
        "abs_error": err,
        "start_error": float(np.max(np.abs(obs0[:B.TARGET1.start] - rec[0, :B.TARGET1.start]))),
        "mean_error": float(err[1:].mean()),
        "max_error": float(err[1:].max()),
        "hand_max_error": float(err[1:, :B.N_HAND].max()),
        "velocity_max_error": float(err[1:, VELOCITY_COLUMNS].max()),
        "target_max_error": float(err[1:, B.TARGET1.start:].max()),
        "ball_max_error": float(ball.max()),
        "curve": {s: float(err[s].mean()) for s in CURVE_STEPS if s < n},
        "ball_curve": {s: float(ball[s]) for s in CURVE_STEPS if s < n},
        "first_ball_drift_step": int(away[0]) if len(away) else None,
        "drop_step": drop_step,
        "replay_return": float(np.sum(rewards)),
        "replay_success": B.episode_success(np.asarray(dists), np.asarray(drops)),
        "recorded_return": float(np.sum(rec_terms["reward"])),
        "recorded_success": B.episode_success(rec_dist, rec_terms["dropped"]),
    }


def _frames_renderer(env):
    """The ``OffscreenFrames`` wrapper of a pixel env (its ``render`` gives the agent's frames)."""
    from envs.wrappers import OffscreenFrames

    e = env
    while e is not None:
        if isinstance(e, OffscreenFrames):
            return e
        e = getattr(e, "env", None)
    raise UserError("baoding: the environment has no off-screen renderer")


def render_recorded(env, obs: np.ndarray) -> np.ndarray:
    """64x64 frames of recorded states ``obs`` (T+1, 40), in the env's own renderer and settings."""
    frames = _frames_renderer(env)
    sim = env.unwrapped
    out = []
    for k, row in enumerate(obs):
        sim.set_recorded_state(row, k)
        out.append(np.asarray(frames.render(), dtype=np.uint8))
    return np.stack(out)


def area_downsample(images: np.ndarray, size: int) -> np.ndarray:
    """Average-pool (N, S, S, 3) uint8 images to (N, size, size, 3) when S is a multiple of size."""
    n, s = images.shape[0], images.shape[1]
    if s % size:
        raise ValueError(f"cannot area-downsample {s} to {size}")
    f = s // size
    return images.reshape(n, size, f, size, f, 3).astype(np.float64).mean(axis=(2, 4))


def convert(spec, path: str | None, dataset_id: str, root: str | None, overwrite: bool) -> str:
    """The ``cmil-shadowhand`` named source: write the Minari dataset (see the module doc)."""
    from envs.collect import _datasets_root
    from envs.registry import make_env
    from envs.sources import write_state_pixel_dataset

    folder = Path(path).expanduser() if path else download_demos()
    files = demo_files(folder)
    demos = [read_demo(p) for p in files]
    with _datasets_root(root):
        model = B.model_dir()  # the remembered model (UserError with how to get it otherwise)
        state_env = B.BaodingEnv(model_path=str(model))
        pix_env = make_env(spec, render_pixels=True)
        episodes, replays = [], []
        try:
            for d in demos:
                replays.append(replay_demo(state_env, d))
                episodes.append(_episode(d, render_recorded(pix_env, d["obs"]), spec.image_size))
        finally:
            pix_env.close()
            state_env.close()
        returns = [float(np.sum(e["rewards"])) for e in episodes]
        from envs.collect import random_policy_stats
        from envs.registry import get_task

        rand = random_policy_stats(get_task(spec.family or spec.name), episodes=20, seed=0)
        meta = {
            "cmil_source": "cmil-shadowhand",
            "cmil_source_path": str(folder.resolve()),
            "cmil_source_files": [d["file"] for d in demos],
            "cmil_model_dir": str(model),
            "cmil_frames": "re-rendered from the recorded states (envs/baoding_demos.py)",
            "cmil_frame_mae": [e["frame_mae"] for e in episodes],
            "cmil_demo_return": float(np.mean(returns)),
            "cmil_random_return": rand["mean_return"],
            "cmil_demo_success": [bool(e["infos"]["success"][-1]) for e in episodes],
            "cmil_replay_mean_error": [r["mean_error"] for r in replays],
            "cmil_replay_max_error": [r["max_error"] for r in replays],
            "cmil_replay_ball_max_error": [r["ball_max_error"] for r in replays],
            "cmil_replay_drop_step": [r["drop_step"] for r in replays],
            "cmil_replay_returns": [r["replay_return"] for r in replays],
            "cmil_task_family": spec.family or spec.name,
            "cmil_camera": {k: (list(map(float, v)) if isinstance(v, (list, tuple)) else v)
                            for k, v in spec.camera.items()},
        }
        return write_state_pixel_dataset(
            spec, episodes, dataset_id=dataset_id, root=None, overwrite=overwrite,
            ref_min_score=rand["mean_return"], ref_max_score=float(np.mean(returns)),
            algorithm_name="reference-demos:cmil-shadowhand",
            description=(f"The CMIL paper's {len(episodes)} ShadowHand Baoding demonstrations "
                         f"(github.com/{DEMO_REPO}, {DEMO_FOLDER}): recorded 40-d states and "
                         f"actions, rewards of the recorded states, {spec.image_size}x{spec.image_size} "
                         "frames re-rendered from the recorded states"),
            extra_metadata=meta,
        )


def _episode(demo: dict, pixels: np.ndarray, size: int) -> dict:
    obs = demo["obs"]
    terms = demo_rewards(obs)
    dist = 0.5 * (terms["dist1"] + terms["dist2"])
    dropped = np.asarray(terms["dropped"], dtype=bool)
    # A recorded drop would have ended the reference's episode: cut there (none of the 20 drops).
    end = int(np.argmax(dropped)) + 1 if dropped.any() else len(demo["actions"])
    success = np.zeros(end + 1, dtype=bool)
    success[-1] = B.episode_success(dist[:end], dropped[:end])
    frame_mae = None
    if demo["image"] is not None and demo["image"].shape[1] % size == 0:
        ref = area_downsample(demo["image"][: end + 1], size)
        frame_mae = float(np.mean(np.abs(ref - pixels[: end + 1].astype(np.float64))))
    return {
        "state": obs[: end + 1].astype(np.float32),
        "pixels": pixels[: end + 1],
        "actions": demo["actions"][:end].astype(np.float32),
        "rewards": np.asarray(terms["reward"][:end], dtype=np.float64),
        "terminated": bool(dropped.any()),
        "truncated": not dropped.any(),
        "success": success,
        "infos": {"success": success,
                  "dist": np.concatenate([[np.nan], dist[:end]]),
                  "dropped": np.concatenate([[False], dropped[:end]])},
        "frame_mae": frame_mae,
    }
