"""Build a task's environment with the observation format runs, evaluation and demos share.

``make_task_env(spec)`` stacks, on top of ``gym.make(spec.env_id, ...)`` (time limit included):

1. ``RawObservation``: keeps the environment's own (dict) observation, as ``info["raw_obs"]``
   after every reset and step and as the attribute ``last_raw_obs``
   (``env.get_wrapper_attr("last_raw_obs")``), so a scripted expert can act in pixel mode too;
2. gymnasium's ``TransformObservation`` with ``spec.flatten``: a flat float32 ``Box`` state;
3. for pixels, ``OffscreenFrames`` (camera from ``spec.camera``, fast render settings, a clear
   ``UserError`` without EGL/OSMesa, GL context made current per frame and freed properly on
   close, so several pixel envs can live in one process) and then gymnasium's
   ``AddRenderObservation``: an off-screen ``(S, S, 3)`` uint8 frame, ``S = spec.image_size``.

Observation by ``render_pixels``:
  - ``None`` (default): the task's mode: the state vector (``state``) or the frame (``pixels``);
  - ``True``: a ``Dict`` with ``state`` and ``pixels`` for either mode (the demo-dataset format);
  - ``False``: the state vector, no renderer, for either mode.

Rendering runs with the fast settings by default: no multisampling (the model's
``vis.quality.offsamples = 0``, read when the GL context is made), no shadows, reflections or
skybox (the scene's render flags). ``fast_render=False`` keeps the model's own settings.
Measured render-only 64x64 fps here (llvmpipe EGL, 2 busy cores): PointMaze 104 -> 218,
FetchPush 52 -> 116 (default -> fast).
"""

from __future__ import annotations

import atexit
import os
import weakref
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.wrappers import AddRenderObservation, TransformObservation

from cmil_bench.errors import UserError

_ROBOTICS_REGISTERED = False
# Release hooks of the live off-screen viewers, run at exit by a hook registered after the first
# GL context exists, hence after (so it runs before) MuJoCo's EGL display termination.
_RELEASES: list = []
_EXIT_HOOK = False


def register_robotics_envs() -> None:
    """Register the gymnasium-robotics environments (PointMaze, Fetch, ...) once per process."""
    global _ROBOTICS_REGISTERED
    if not _ROBOTICS_REGISTERED:
        import gymnasium_robotics

        gym.register_envs(gymnasium_robotics)
        _ROBOTICS_REGISTERED = True


class RawObservation(gym.Wrapper):
    """Records the wrapped env's observation in ``info["raw_obs"]`` and ``self.last_raw_obs``."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self.last_raw_obs: Any = None

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        obs, info = self.env.reset(seed=seed, options=options)
        self.last_raw_obs = obs
        info = dict(info)
        info["raw_obs"] = obs
        return obs, info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.last_raw_obs = obs
        info = dict(info)
        info["raw_obs"] = obs
        return obs, reward, terminated, truncated, info


def default_flatten(obs: Any) -> np.ndarray:
    """Concatenate a dict observation's arrays (in key order), or flatten an array."""
    if isinstance(obs, dict):
        return np.concatenate([np.ravel(np.asarray(v)) for v in obs.values()]).astype(np.float32)
    return np.ravel(np.asarray(obs)).astype(np.float32)


def find_renderer(env: gym.Env):
    """The gymnasium ``MujocoRenderer`` of a MuJoCo env (PointMaze keeps it on ``point_env``)."""
    u = env.unwrapped
    for holder in (u, getattr(u, "point_env", None), getattr(u, "ant_env", None)):
        r = getattr(holder, "mujoco_renderer", None) if holder is not None else None
        if r is not None:
            return r
    for value in vars(u).values():
        r = getattr(value, "mujoco_renderer", None)
        if r is not None:
            return r
    return None


def _gl_backends() -> set[str]:
    from gymnasium.envs.mujoco import mujoco_rendering

    return set(getattr(mujoco_rendering, "_ALL_RENDERERS", {"egl": 0, "osmesa": 0, "glfw": 0}))


def _ensure_gl_backend() -> None:
    os.environ.setdefault("MUJOCO_GL", "egl")
    if os.environ["MUJOCO_GL"] in ("egl", "osmesa"):
        os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])


def _release_viewer(viewer) -> None:
    """Free a viewer's MjrContext with its own GL context current, then the GL context.

    MuJoCo frees an MjrContext's GL objects in whatever context is current; left to the garbage
    collector, a dead env's MjrContext would delete a live env's framebuffer (black frames).
    """
    try:
        ctx = getattr(viewer, "opengl_context", None)
        if ctx is None or ctx._context is None:
            return
    except AttributeError:  # OSMesa context: no _context attribute
        pass
    try:
        viewer.make_context_current()
        viewer.con.free()
        viewer.opengl_context.free()
    except Exception:  # noqa: BLE001 - best effort during close / interpreter exit
        pass


def _track_release(release) -> None:
    global _EXIT_HOOK
    _RELEASES[:] = [r for r in _RELEASES if r.alive]
    _RELEASES.append(release)
    if not _EXIT_HOOK:
        atexit.register(_release_all)
        _EXIT_HOOK = True


def _release_all() -> None:
    for release in list(_RELEASES):
        release()
    _RELEASES.clear()


class OffscreenFrames(gym.Wrapper):
    """Owns a MuJoCo env's off-screen viewer: makes its GL context current before each frame
    (several envs may render in one process) and frees it properly on ``close``.

    Made by ``make_task_env`` before ``AddRenderObservation``; raises ``UserError`` when no
    off-screen context can be made (no EGL/OSMesa).
    """

    def __init__(self, env: gym.Env, spec, fast_render: bool = True):
        import mujoco

        super().__init__(env)
        renderer = find_renderer(env)
        if renderer is None:
            raise UserError(
                f"task {spec.name}: env {spec.env_id!r} has no MuJoCo renderer for pixels")
        if spec.camera:
            cam = dict(renderer.default_cam_config or {})
            cam.update({k: (np.asarray(v, dtype=np.float64) if isinstance(v, (list, tuple)) else v)
                        for k, v in spec.camera.items()})
            renderer.default_cam_config = cam
        if fast_render:  # read when the GL context is made: no multisample anti-aliasing
            renderer.model.vis.quality.offsamples = 0
        hint = ("pixel tasks need MUJOCO_GL=egl or MUJOCO_GL=osmesa with a working EGL or "
                "OSMesa library")
        backend = os.environ.get("MUJOCO_GL")
        if backend not in _gl_backends():
            raise UserError(f"task {spec.name}: unknown MUJOCO_GL={backend!r}; {hint}")
        try:
            viewer = renderer._get_viewer(render_mode="rgb_array")
        except Exception as exc:  # no EGL/OSMesa library, no device
            raise UserError(
                f"task {spec.name}: cannot render off-screen with MUJOCO_GL={backend!r} "
                f"({type(exc).__name__}: {exc}); {hint}"
            ) from exc
        if fast_render:
            for flag in (mujoco.mjtRndFlag.mjRND_SHADOW, mujoco.mjtRndFlag.mjRND_REFLECTION,
                         mujoco.mjtRndFlag.mjRND_SKYBOX):
                viewer.scn.flags[flag] = 0
        self.viewer = viewer
        self.fast_render = fast_render
        # Runs on close, on garbage collection, or at interpreter exit.
        self._release = weakref.finalize(self, _release_viewer, viewer)
        _track_release(self._release)

    def render(self):
        self.viewer.make_context_current()
        return self.env.render()

    def close(self):
        self._release()
        super().close()


def make_task_env(spec, render_pixels: bool | None = None, fast_render: bool = True) -> gym.Env:
    """The environment of task ``spec`` (an ``envs.registry.TaskSpec``); see the module doc."""
    register_robotics_envs()
    if render_pixels is None:
        layout = "pixels" if spec.obs_mode == "pixels" else "state"
    else:
        layout = "both" if render_pixels else "state"
    want_frames = layout != "state"
    kwargs = dict(spec.env_kwargs)
    if want_frames:
        _ensure_gl_backend()
        kwargs.update(render_mode="rgb_array", width=spec.image_size, height=spec.image_size)
    try:
        env = gym.make(spec.env_id, max_episode_steps=spec.max_episode_steps, **kwargs)
    except gym.error.Error as exc:
        raise UserError(f"task {spec.name}: cannot make env {spec.env_id!r}: {exc}") from exc

    env = RawObservation(env)
    flatten = spec.flatten or default_flatten
    first = flatten(env.observation_space.sample())
    state_space = gym.spaces.Box(-np.inf, np.inf, shape=first.shape, dtype=np.float32)
    env = TransformObservation(env, lambda o: np.asarray(flatten(o), dtype=np.float32), state_space)
    if not want_frames:
        return env
    env = OffscreenFrames(env, spec, fast_render=fast_render)
    return AddRenderObservation(env, render_only=(layout == "pixels"), render_key="pixels",
                                obs_key="state")

