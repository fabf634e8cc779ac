"""ShadowHand Baoding, the CMIL paper's dexterity task: its env class and success rule.

``baoding`` (40-d state) and ``baoding-pixels`` (64x64 frames) run the task of PDDM
(google-research/pddm, Apache License 2.0; the copy the CMIL reference code vendors, in
``common/pddm``) on today's ``mujoco`` bindings: a 24-joint Shadow Hand, palm up, rotates two
Baoding balls counter-clockwise around each other, each ball following a target that circles the
palm once every 60 steps. What this port keeps from the reference environment (``BaodingEnv`` of
``envs/baoding/baoding_env.py``, mujoco-py), written anew here:

* Model: ``envs/baoding/assets/shadowhand_baoding_2.xml`` with the hand files of
  ``env_models/shadowhand/resources``, read from a folder on disk (never shipped: see
  ``model_dir``). MuJoCo 3 rejects the obsolete ``apirate`` attribute of ``<option>`` in
  ``assets.xml``; it is dropped from the text in memory (the user's files are never edited) and the
  model is compiled from strings with an assets dict. The hand's 44 fixed tendons are made
  unlimited, as MuJoCo 2.0 (which ran the reference) left them (see ``load_model``).
* Reset: the model's keyframe 0 (hand pose and both balls), zero velocities. No randomness: every
  episode starts in the same state (so do the 20 demos).
* Step: an action in [-1, 1]^24 maps to joint-position targets around the keyframe's hand pose
  (``+a`` scales 90 % of the way to the upper control limit, ``-a`` to the lower one, and a
  positive action whose target comes out <= 0 is mapped a second time, as the reference's
  in-place mapping does: ``scale_action``); each target
  is then limited to 3 rad/s of motion from the current joint position over the step's 0.1 s;
  then 40 physics steps of 2.5 ms (frame skip 40).
* Targets: at step k (counting from 0) the target angles are ``2 pi k / 60`` plus 3pi/4 (ball 1)
  and -pi/4 (ball 2), i.e. counter-clockwise; the targets sit on an ellipse (radii 0.02 and 0.036
  m, centre (0.005, 0.055)) in the frame of the body that carries the target sites, and the
  observation reports their world x, y. At reset the sites show the last angle of a 120-step
  episode (``2 pi 119 / 60``): that is what the reference's sites show at a reset that follows a
  full episode (the sites are model data, not reset), and what 18 of the 20 demos' first rows show.
* Observation (40-d, float64, the demos' ``obs`` layout): hand joint positions (24), ball 1
  position (3), "ball 1 velocity" (3), ball 2 position (3), "ball 2 velocity" (3), target 1 x, y,
  target 2 x, y. The reference takes the object velocities as ``qvel[-14:]`` although the two free
  joints have 12 velocity coordinates, so its "ball 1 velocity" is (qvel of the last two hand
  joints, ball 1 vx) and "ball 2 velocity" is (ball 1 wz, ball 2 vx, ball 2 vy); kept as is, since
  the demos were recorded that way. Positions are read after the 40 physics steps without a further
  forward pass (the targets are world positions from the last step's kinematics), as in mujoco-py.
* Reward (per step, from the observation): ``-5 |ball1_xy - target1| - 5 |ball2_xy - target2|``,
  ``-500`` when a ball is below 6 cm (dropped), ``-10`` when the wrist joint WRJ0 exceeds 0.15 rad.
  In the reference the drop and wrist flags share one array, so a drop also costs the -10; kept.
* End: an episode terminates when a ball drops (the reference's ``done``); otherwise it is cut at
  120 steps, the demos' length.
* Success (derived from the reward): the episode runs its 120 steps without a drop (no -500 step)
  and the reward's distance term, ``-10 x`` the mean ball-to-target distance, averages at least
  -0.2 per step over the last 60 steps (one revolution), i.e. the balls stay within 2 cm of their
  targets on average. The 20 demos' recorded states average -0.055 there (all succeed); holding the
  hand still keeps the balls but averages -0.47 (fails). Info ``dist`` carries the per-step mean
  distance, ``dropped`` the drop flag.
* Model folder: ``cmil-bench demos --task baoding --model DIR`` remembers it in the Minari root
  (``remembered_model_file``); ``BaodingEnv(model_path=...)`` overrides it.
* Pixels: the reference camera, a free camera at distance 0.3, azimuth -67.5, elevation -42.5,
  looking at the median of the geoms' positions at the reset pose (mujoco-py's default look-at
  point when the camera is made, right after the first reset).
"""

from __future__ import annotations

import json
import os
import re
import xml.etree.ElementTree as ET
from functools import lru_cache
from pathlib import Path
from typing import ClassVar

import gymnasium as gym
import mujoco
import numpy as np
from gymnasium.envs.mujoco import MujocoEnv
from gymnasium.utils import EzPickle

from cmil_bench.errors import UserError

BAODING_ENV_ID = "CmilBaoding-v0"
EPISODE_STEPS = 120
FRAME_SKIP = 40
N_HAND = 24  # hand joints = actuators
OBS_DIM = 40
# The model inside a pddm folder (a copy of common/pddm of github.com/victorkolev/cmil, of pddm/ of
# github.com/google-research/pddm, or of ../shared/data/pddm-baoding).
MODEL_XML = "envs/baoding/assets/shadowhand_baoding_2.xml"
HAND_RESOURCES = "env_models/shadowhand/resources"
# Where a folder given by the user may hold that pddm folder.
PDDM_SUBDIRS = (".", "common/pddm", "pddm")

# Target trajectory of the counter-clockwise task.
PERIOD = 60  # steps per revolution
X_RADIUS, Y_RADIUS = 0.02, 0.02 * 1.5 * 1.2
CENTRE = (0.005, 0.055)
START_ANGLE_1, START_ANGLE_2 = 3 * np.pi / 4, -np.pi / 4
TARGET_HEIGHT = -0.07  # the sites' offset along the carrying body's y axis (towards the viewer)
RESET_TARGET_STEP = EPISODE_STEPS - 1

# Reward terms.
DIST_WEIGHT = 5.0
DROP_HEIGHT = 0.06
DROP_PENALTY = 500.0
WRIST_LIMIT = 0.15
WRIST_PENALTY = 10.0
# Success: both balls up, mean per-ball distance to the targets over the last SUCCESS_WINDOW steps.
SUCCESS_WINDOW = 60
SUCCESS_DIST = 0.02

CAMERA = {"distance": 0.3, "azimuth": -67.5, "elevation": -42.5,
          # median of geom_xpos at the reset pose (mujoco-py's initial look-at point); checked
          # against the model by tests/test_baoding.py
          "lookat": [0.00704, -0.001, 0.17037]}

# Observation slices.
BALL1_POS = slice(24, 27)
BALL2_POS = slice(30, 33)
TARGET1 = slice(36, 38)
TARGET2 = slice(38, 40)
WRIST_INDEX = 1


# ----------------------------------------------------------------------------- the model on disk

MODEL_REPO = "victorkolev/cmil"
MODEL_COMMIT = "ddb448dfd81e9128953574db5b9ab285f2ae7d10"
MODEL_REPO_FOLDER = "common/pddm"
HOW_TO_GET = (
    "get the model with `cmil-bench demos --task baoding --model DIR` (DIR: a copy of common/pddm "
    f"of github.com/{MODEL_REPO} or of pddm/ of github.com/google-research/pddm; on a machine with "
    "network, `cmil-bench demos --task baoding --model download` fetches it)")


def find_pddm_dir(path: str | os.PathLike) -> Path:
    """The pddm folder (holding ``MODEL_XML``) in ``path`` or in its ``common/pddm`` or ``pddm``."""
    base = Path(path).expanduser()
    if not base.is_dir():
        raise UserError(f"baoding model: no such folder {base}; {HOW_TO_GET}")
    for sub in PDDM_SUBDIRS:
        cand = (base / sub).resolve()
        if (cand / MODEL_XML).is_file():
            return cand
    raise UserError(f"baoding model: {base} holds no {MODEL_XML} (nor under common/pddm or pddm); "
                    f"{HOW_TO_GET}")


def _drop_apirate(text: str) -> str:
    """Remove the ``apirate`` attribute (gone since MuJoCo 2.x) from every ``<option>`` tag."""
    return re.sub(r"<option\b[^>]*>",
                  lambda m: re.sub(r"\s+apirate\s*=\s*(\"[^\"]*\"|'[^']*')", "", m.group(0)), text)


def _referenced_files(xml_text: str) -> tuple[list[str], list[str], str]:
    """Includes, mesh/texture/hfield/skin files and the meshdir named in one XML file."""
    try:
        root = ET.fromstring(xml_text)
    except ET.ParseError as exc:
        raise UserError(f"baoding model: cannot parse XML ({exc})") from None
    includes = [e.get("file") for e in root.iter("include") if e.get("file")]
    assets = [e.get("file") for tag in ("mesh", "texture", "hfield", "skin") for e in root.iter(tag)
              if e.get("file")]
    meshdir = next((e.get("meshdir") for e in root.iter("compiler") if e.get("meshdir")), "")
    return includes, assets, meshdir


@lru_cache(maxsize=4)
def model_sources(pddm_dir: str) -> tuple[str, tuple[tuple[str, bytes], ...]]:
    """The task model's main XML text and the files it needs, keyed as MuJoCo names them.

    Includes are relative to the main file's folder, meshes to the compiler's meshdir (MuJoCo's
    rules); every XML text loses its ``apirate`` attribute. A missing file is a ``UserError``.
    """
    main = Path(pddm_dir) / MODEL_XML
    base = main.parent
    main_text = _drop_apirate(main.read_text())
    assets: dict[str, bytes] = {}
    pending = [main_text]
    meshdir = ""
    files: list[str] = []
    while pending:
        text = pending.pop()
        includes, refs, md = _referenced_files(text)
        meshdir = md or meshdir
        files.extend(refs)
        for inc in includes:
            if inc in assets:
                continue
            p = base / inc
            if not p.is_file():
                raise UserError(f"baoding model: {p} is missing (included by the model); {HOW_TO_GET}")
            t = _drop_apirate(p.read_text())
            assets[inc] = t.encode()
            pending.append(t)
    for f in files:
        key = os.path.join(meshdir, f) if meshdir else f
        p = base / key
        if not p.is_file():
            raise UserError(f"baoding model: {p} is missing (named by the model); {HOW_TO_GET}")
        assets[key] = p.read_bytes()
    return main_text, tuple(sorted(assets.items()))


def load_model(pddm_dir: str | os.PathLike) -> mujoco.MjModel:
    """Compile the task model from the pddm folder ``pddm_dir`` (see ``find_pddm_dir``)."""
    text, assets = model_sources(str(Path(pddm_dir).resolve()))
    try:
        model = mujoco.MjModel.from_xml_string(text, dict(assets))
    except ValueError as exc:
        raise UserError(f"baoding model in {pddm_dir} does not compile: {exc}") from None
    # The hand's fixed tendons (wrist, finger couplers) have a `range` but no `limited`. MuJoCo 2.0,
    # which the reference ran (mujoco-py), left such tendons unlimited; MuJoCo >= 2.3 limits them
    # (compiler autolimits). Limited, the couplers tie each finger's two distal joints together and
    # the replayed demos' fingers miss their recorded angles by up to 0.6 rad after one step;
    # unlimited, by about 1e-4 (benchmarks/RESULTS.md). The 44 tendons sit outside the class
    # (Adroit) whose default says `limited`, so all of them were unlimited in the reference.
    model.tendon_limited[:] = 0
    return model


def remembered_model_file(root: str | os.PathLike | None = None) -> Path:
    """Where the model's folder is remembered: ``cmil-bench/baoding-model.json`` in the Minari root
    (``root``, else ``$MINARI_DATASETS_PATH``, else ~/.minari/datasets), beside the demo datasets
    that runs read. Minari lists only folders there, so the file does not disturb it."""
    from envs.datasets import minari_root

    base = Path(root).expanduser() if root is not None else minari_root()
    return base / "cmil-bench" / "baoding-model.json"


def remember_model_dir(path: str | os.PathLike, root: str | os.PathLike | None = None) -> Path:
    """Check that ``path`` holds a loadable model and remember its pddm folder; returns the folder."""
    pddm = find_pddm_dir(path)
    load_model(pddm)
    target = remembered_model_file(root)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(json.dumps({"pddm_dir": str(pddm), "model": MODEL_XML}, indent=1) + "\n")
    os.replace(tmp, target)
    return pddm


def model_dir(explicit: str | os.PathLike | None = None) -> Path:
    """The pddm folder to load: ``explicit`` if given, else the remembered one."""
    if explicit:
        return find_pddm_dir(explicit)
    note = remembered_model_file()
    if not note.is_file():
        raise UserError(f"the baoding model's folder is not set ({note} does not exist); {HOW_TO_GET}")
    try:
        saved = json.loads(note.read_text())["pddm_dir"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UserError(f"cannot read {note} ({type(exc).__name__}: {exc}); {HOW_TO_GET}") from None
    if not (Path(saved) / MODEL_XML).is_file():
        raise UserError(f"the remembered baoding model folder {saved} (in {note}) holds no "
                        f"{MODEL_XML} any more; {HOW_TO_GET}")
    return Path(saved)


# The files the task's model needs, relative to the pddm folder (for the download).
MODEL_FILES = (
    MODEL_XML,
    "envs/baoding/assets/chain.xml",
    "envs/baoding/assets/baoding_ball_1.xml",
    "envs/baoding/assets/baoding_ball_2.xml",
    f"{HAND_RESOURCES}/assets.xml",
    f"{HAND_RESOURCES}/joint_position_actuation.xml",
    *(f"{HAND_RESOURCES}/meshes/{m}.stl" for m in (
        "forearm_electric", "forearm_electric_cvx", "wrist", "palm", "knuckle", "F3", "F2",
        "F1_biotac", "lfmetacarpal", "TH3_z", "TH2_z", "TH1_z_biotac", "biotacSP")),
)


def model_url(rel: str) -> str:
    return (f"https://raw.githubusercontent.com/{MODEL_REPO}/{MODEL_COMMIT}/"
            f"{MODEL_REPO_FOLDER}/{rel}")




def download_model(dest: str | os.PathLike | None = None) -> Path:
    """Fetch the model's files from the public repository into ``dest`` (default
    ``$CMIL_BENCH_CACHE/pddm-baoding``, i.e. ~/.cache/cmil-bench/pddm-baoding)."""
    from envs.sources import cache_dir, fetch_files

    dest = Path(dest) if dest is not None else cache_dir() / "pddm-baoding"
    return fetch_files({rel: model_url(rel) for rel in MODEL_FILES}, dest,
                       f"without network, copy common/pddm of github.com/{MODEL_REPO} to this "
                       "machine and pass --model DIR")


def set_model(path: str | None, root: str | os.PathLike | None = None) -> Path:
    """What ``cmil-bench demos --task baoding --model PATH`` does: remember the pddm folder in
    ``PATH`` (``download``: fetch it first) for the runs that read the Minari root ``root``."""
    if path == "download":
        path = str(download_model())
    return remember_model_dir(path, root=root)


# ----------------------------------------------------------------------------- task logic


def target_angles(step: int) -> tuple[float, float]:
    """The two targets' angles at step ``step`` (0 = the first step of an episode)."""
    a = 2 * np.pi * step / PERIOD
    return a + START_ANGLE_1, a + START_ANGLE_2


def target_site_pos(angle: float) -> np.ndarray:
    """A target site's position in the frame of its body for target angle ``angle``.

    The ellipse lies in that body's x-z plane (the palm plane); y lifts the site towards the
    viewer."""
    return np.array([X_RADIUS * np.cos(angle) + CENTRE[0], TARGET_HEIGHT,
                     Y_RADIUS * np.sin(angle) + CENTRE[1]])


def reward_terms(obs: np.ndarray) -> dict[str, np.ndarray]:
    """The reference's reward of observation(s) ``obs`` (..., 40), with its parts.

    Returns ``reward``, ``dist1``, ``dist2`` (ball-to-target xy distances), ``dropped`` (a ball
    below 6 cm) and ``wrist_high``.
    """
    obs = np.asarray(obs, dtype=np.float64)
    d1 = np.linalg.norm(obs[..., BALL1_POS][..., :2] - obs[..., TARGET1], axis=-1)
    d2 = np.linalg.norm(obs[..., BALL2_POS][..., :2] - obs[..., TARGET2], axis=-1)
    dropped = (obs[..., BALL1_POS][..., 2] < DROP_HEIGHT) | (obs[..., BALL2_POS][..., 2] < DROP_HEIGHT)
    wrist = obs[..., WRIST_INDEX] > WRIST_LIMIT
    # The reference's drop flag and wrist flag are one array, so a drop also pays the wrist penalty.
    reward = (-DIST_WEIGHT * (d1 + d2) - DROP_PENALTY * dropped - WRIST_PENALTY * (wrist | dropped))
    return {"reward": reward, "dist1": d1, "dist2": d2, "dropped": dropped, "wrist_high": wrist}


def episode_success(dist: np.ndarray, dropped: np.ndarray) -> bool:
    """Success of one episode from its per-step mean ball-to-target distances and drop flags."""
    dist = np.asarray(dist, dtype=np.float64)
    if len(dist) == 0 or bool(np.any(dropped)) or len(dist) < EPISODE_STEPS:
        return False
    return bool(np.mean(dist[-SUCCESS_WINDOW:]) <= SUCCESS_DIST)


def success_from_infos(infos: list[dict]) -> bool:
    """Success of an episode from its step infos (``dist``, ``dropped``); envs/tasks.yaml names it."""
    return episode_success(np.array([i.get("dist", np.inf) for i in infos]),
                           np.array([bool(i.get("dropped", False)) for i in infos]))


# ----------------------------------------------------------------------------- the environment


class BaodingEnv(MujocoEnv, EzPickle):
    """The reference's counter-clockwise Baoding task on ``mujoco`` (see the module doc).

    ``model_path``: a folder holding the pddm model (default: the remembered one, ``model_dir``).
    Actions: Box(-1, 1, (24,)); observations: Box(40,) float64.
    """

    metadata: ClassVar[dict] = {"render_modes": ["rgb_array", "depth_array"], "render_fps": 10}

    def __init__(self, model_path: str | None = None, render_mode: str | None = None,
                 width: int = 64, height: int = 64, default_camera_config: dict | None = None,
                 **kwargs):
        self._pddm_dir = model_dir(model_path)
        obs_space = gym.spaces.Box(-np.inf, np.inf, shape=(OBS_DIM,), dtype=np.float64)
        MujocoEnv.__init__(self, str(self._pddm_dir / MODEL_XML), FRAME_SKIP, obs_space,
                           render_mode=render_mode, width=width, height=height,
                           default_camera_config=default_camera_config or dict(CAMERA), **kwargs)
        EzPickle.__init__(self, model_path=model_path, render_mode=render_mode, width=width,
                          height=height, default_camera_config=default_camera_config, **kwargs)
        m = self.model
        if m.nu != N_HAND or m.nq != N_HAND + 14 or m.nv != N_HAND + 12:
            raise UserError(f"baoding model in {self._pddm_dir} has nq={m.nq} nv={m.nv} nu={m.nu}; "
                            f"expected 38, 36, 24 (the two-ball model {MODEL_XML})")
        self.reset_qpos = m.key_qpos[0].copy()
        mid = self.reset_qpos[:N_HAND]
        self._act_mid = mid.copy()
        self._act_up = 0.9 * (m.actuator_ctrlrange[:, 1] - mid)
        self._act_down = 0.9 * (mid - m.actuator_ctrlrange[:, 0])
        self._max_move = 3.0 * FRAME_SKIP * m.opt.timestep  # 3 rad/s over one env step
        self._t1 = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_SITE, "target1_site")
        self._t2 = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_SITE, "target2_site")
        self.counter = 0
        self._set_targets(RESET_TARGET_STEP)
        self._put_reset_state()

    def _initialize_simulation(self):
        model = load_model(self._pddm_dir)
        model.vis.global_.offwidth = max(model.vis.global_.offwidth, self.width)
        model.vis.global_.offheight = max(model.vis.global_.offheight, self.height)
        return model, mujoco.MjData(model)

    def _set_action_space(self):
        self.action_space = gym.spaces.Box(-1.0, 1.0, shape=(N_HAND,), dtype=np.float32)
        return self.action_space

    # -- state -----------------------------------------------------------------------------
    def _set_targets(self, step: int) -> None:
        a1, a2 = target_angles(step)
        self.model.site_pos[self._t1] = target_site_pos(a1)
        self.model.site_pos[self._t2] = target_site_pos(a2)

    def _put_reset_state(self) -> None:
        mujoco.mj_resetData(self.model, self.data)
        self.data.qpos[:] = self.reset_qpos
        self.data.qvel[:] = 0.0
        mujoco.mj_forward(self.model, self.data)

    def _get_obs(self) -> np.ndarray:
        d = self.data
        qpos, qvel = d.qpos, d.qvel
        obj_vel = qvel[-14:]  # the reference's slice: see the module doc
        return np.concatenate([
            qpos[:N_HAND], qpos[N_HAND:N_HAND + 3], obj_vel[:3],
            qpos[N_HAND + 7:N_HAND + 10], obj_vel[7:10],
            d.site_xpos[self._t1, :2], d.site_xpos[self._t2, :2],
        ]).astype(np.float64)

    def scale_action(self, action: np.ndarray) -> np.ndarray:
        """Joint-position targets of a normalised action, before the velocity limit."""
        a = np.clip(np.asarray(action, dtype=np.float64), -1.0, 1.0)
        up = np.where(a > 0, self._act_mid + a * self._act_up, a)
        # The reference maps the positive entries first and then every entry that is <= 0 *after*
        # that, so a positive action on a joint whose target is <= 0 (the thumb's THJ0, the wrist)
        # is mapped twice; the demos were recorded so.
        return np.where(up <= 0, self._act_mid + up * self._act_down, up)

    # -- gymnasium API ---------------------------------------------------------------------
    def reset_model(self):
        self.counter = 0
        self._set_targets(RESET_TARGET_STEP)
        self._put_reset_state()
        return self._get_obs()

    def step(self, action):
        self._set_targets(self.counter)
        target = self.scale_action(action)
        here = self.data.qpos[:N_HAND]
        ctrl = here + np.clip(target - here, -self._max_move, self._max_move)
        self.do_simulation(ctrl, self.frame_skip)
        self.counter += 1
        obs = self._get_obs()
        terms = reward_terms(obs)
        dropped = bool(terms["dropped"])
        info = {"dist": float(0.5 * (terms["dist1"] + terms["dist2"])),
                "dist1": float(terms["dist1"]), "dist2": float(terms["dist2"]),
                "dropped": dropped, "wrist_high": bool(terms["wrist_high"]), "step": self.counter}
        if self.render_mode == "human":
            self.render()
        return obs, float(terms["reward"]), dropped, False, info

    def _get_reset_info(self):
        return {"dist": float("nan"), "dropped": False, "step": 0}

    # -- for replays and re-rendering ------------------------------------------------------
    def set_recorded_state(self, obs: np.ndarray, step: int) -> None:
        """Put the sim in the state a 40-d observation records, as far as it can say.

        Hand joints and ball positions come from ``obs``; ball orientations are the keyframe's
        (invisible on the plain spheres), ball linear velocities the recorded ones where the
        observation has them (ball 1 vx, ball 2 vx, vy; the rest zero), hand velocities zero except
        the last two joints' (recorded). The targets show step ``step - 1``'s angle (``step`` is the
        observation's row: row 0 is the reset). Ends with a forward pass.
        """
        obs = np.asarray(obs, dtype=np.float64)
        self._put_reset_state()
        d = self.data
        d.qpos[:N_HAND] = obs[:N_HAND]
        d.qpos[N_HAND:N_HAND + 3] = obs[BALL1_POS]
        d.qpos[N_HAND + 7:N_HAND + 10] = obs[BALL2_POS]
        d.qvel[:] = 0.0
        d.qvel[N_HAND - 2:N_HAND] = obs[27:29]
        d.qvel[N_HAND] = obs[29]
        d.qvel[N_HAND + 5] = obs[33]
        d.qvel[N_HAND + 6:N_HAND + 8] = obs[34:36]
        self.counter = step
        self._set_targets(step - 1 if step > 0 else RESET_TARGET_STEP)
        mujoco.mj_forward(self.model, d)
