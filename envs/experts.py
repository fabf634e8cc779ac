"""Scripted experts for the cheap tasks.

An expert is built from the task's environment (``EXPERTS[name](env)``), gets the raw observation
of the underlying gymnasium env (the dict that ``info["raw_obs"]`` carries, see
``envs.wrappers``) at ``reset`` and on every call, and returns a float32 action inside the action
space. Experts are deterministic functions of the observation (plus a small phase memory).
"""

from __future__ import annotations

from collections import deque
from typing import Callable, Protocol

import gymnasium as gym
import numpy as np


class Expert(Protocol):
    def reset(self, raw_obs) -> None: ...

    def __call__(self, raw_obs) -> np.ndarray: ...


def _clip_action(env: gym.Env, a: np.ndarray) -> np.ndarray:
    space = env.action_space
    return np.clip(np.asarray(a, dtype=np.float32), space.low, space.high).astype(np.float32)


class PointMazeExpert:
    """Waypoint controller for gymnasium-robotics PointMaze.

    A breadth-first search over the maze grid gives the shortest cell path from the ball's cell to
    the goal's cell; a PD controller drives the ball to the centre of the next cell on that path
    and, once in the goal's cell, to the goal itself (and holds it there).
    """

    def __init__(self, env: gym.Env, kp: float = 10.0, kd: float = 1.0, lookahead: float = 0.25):
        self.env = env
        self.maze = env.unwrapped.maze
        self.kp, self.kd, self.lookahead = kp, kd, lookahead
        grid = self.maze.maze_map
        self.free = np.array([[cell != 1 for cell in row] for row in grid], dtype=bool)
        self._path_cache: dict[tuple, dict] = {}

    def reset(self, raw_obs) -> None:  # noqa: ARG002 (the Expert protocol)
        self._path_cache.clear()

    def _cell(self, xy) -> tuple[int, int]:
        r, c = self.maze.cell_xy_to_rowcol(np.asarray(xy, dtype=np.float64))
        r = int(np.clip(r, 0, self.free.shape[0] - 1))
        c = int(np.clip(c, 0, self.free.shape[1] - 1))
        return r, c

    def _parents_to(self, goal: tuple[int, int]) -> dict:
        """BFS from the goal cell: maps each reachable cell to its next cell towards the goal."""
        if goal in self._path_cache:
            return self._path_cache[goal]
        nxt = {goal: goal}
        queue = deque([goal])
        rows, cols = self.free.shape
        while queue:
            r, c = queue.popleft()
            for dr, dc in ((1, 0), (-1, 0), (0, 1), (0, -1)):
                n = (r + dr, c + dc)
                if 0 <= n[0] < rows and 0 <= n[1] < cols and self.free[n] and n not in nxt:
                    nxt[n] = (r, c)
                    queue.append(n)
        self._path_cache[goal] = nxt
        return nxt

    def waypoint(self, pos: np.ndarray, goal: np.ndarray) -> np.ndarray:
        cell, goal_cell = self._cell(pos), self._cell(goal)
        if cell == goal_cell:
            return goal
        nxt = self._parents_to(goal_cell)
        if cell not in nxt:  # numerically inside a wall cell: head for the goal directly
            return goal
        step = nxt[cell]
        target = np.asarray(self.maze.cell_rowcol_to_xy(np.array(step)), dtype=np.float64)
        # Once close to the next cell's centre, aim at the one after it (smoother corners).
        if np.linalg.norm(target - pos) < self.lookahead and step != goal_cell:
            target = np.asarray(self.maze.cell_rowcol_to_xy(np.array(nxt[step])), dtype=np.float64)
        elif step == goal_cell and np.linalg.norm(target - pos) < 0.5:
            target = goal
        return target

    def __call__(self, raw_obs) -> np.ndarray:
        o = np.asarray(raw_obs["observation"], dtype=np.float64)
        pos, vel = o[:2], o[2:4]
        goal = np.asarray(raw_obs["desired_goal"], dtype=np.float64)
        target = self.waypoint(pos, goal)
        a = self.kp * (target - pos) - self.kd * vel
        return _clip_action(self.env, a)


class FetchPushExpert:
    """Scripted pusher for gymnasium-robotics FetchPush (gripper blocked closed).

    Phases: lift above the table (unless the gripper is already behind the object, then it slides
    there at table height), fly to a point behind the object on the object->goal line, go
    down to the object's height, push along the line (steering back onto it), and hold still once
    the object is within ``done_radius`` of the goal. If the object drifts off the line (or
    slides away from the goal again) the controller lifts and sets up again.
    Observation layout (25): grip_pos 0:3, object_pos 3:6, ...
    """

    def __init__(self, env: gym.Env, gain: float = 15.0, behind: float = 0.07,
                 contact: float = 0.05, hover: float = 0.05, push_step: float = 0.08,
                 off_line: float = 0.025, done_radius: float = 0.02, slow_gain: float = 6.0,
                 min_speed: float = 0.25):
        self.env = env
        self.gain, self.behind, self.contact, self.hover = gain, behind, contact, hover
        self.slow_gain, self.min_speed = slow_gain, min_speed
        self.push_step, self.off_line, self.done_radius = push_step, off_line, done_radius
        self.phase = "approach"

    def reset(self, raw_obs) -> None:  # noqa: ARG002 (the Expert protocol)
        self.phase = "approach"

    def __call__(self, raw_obs) -> np.ndarray:
        o = np.asarray(raw_obs["observation"], dtype=np.float64)
        grip, obj = o[0:3], o[3:6]
        goal = np.asarray(raw_obs["desired_goal"], dtype=np.float64)
        to_goal = goal[:2] - obj[:2]
        dist = float(np.linalg.norm(to_goal))
        d = to_goal / dist if dist > 1e-6 else np.array([1.0, 0.0])
        start = obj[:2] - d * self.behind  # where the gripper stands to push
        rel = grip[:2] - obj[:2]
        along = float(rel @ d)  # negative: gripper behind the object
        lateral = float(abs(rel[0] * d[1] - rel[1] * d[0]))
        z_push, z_high = obj[2], obj[2] + self.hover

        if dist < self.done_radius:
            self.phase = "hold"
        if self.phase == "hold":
            if dist < 2 * self.done_radius:  # close enough: keep still
                return self._act(grip, grip)
            self.phase = "approach"
        if self.phase == "push" and (lateral > self.off_line or along > -0.02):
            self.phase = "approach"
        if self.phase == "approach" and along < -(self.behind - 0.01) and grip[2] < z_high - 0.02:
            # already behind the object at table height: slide straight to the start point
            if np.linalg.norm(grip[:2] - start) < 0.012:
                self.phase = "push"
            else:
                return self._act(np.array([start[0], start[1], z_push]), grip)
        if self.phase == "approach":
            if np.linalg.norm(grip[:2] - start) < 0.012:
                self.phase = "descend"
            elif grip[2] < z_high - 0.02 and np.linalg.norm(grip[:2] - start) > 0.03:
                target = np.array([grip[0], grip[1], z_high + 0.01])  # lift first
                return self._act(target, grip)
            else:
                return self._act(np.array([start[0], start[1], z_high]), grip)
        if self.phase == "descend":
            if abs(grip[2] - z_push) < 0.01:
                self.phase = "push"
            else:
                return self._act(np.array([start[0], start[1], z_push]), grip)
        # push: stay on the line behind the object and advance towards the goal, slowing down
        # near it so that the block does not slide past
        advance = min(dist, self.push_step)
        target_xy = obj[:2] - d * self.contact + d * advance
        speed = float(np.clip(self.slow_gain * dist, self.min_speed, 1.0))
        return self._act(np.array([target_xy[0], target_xy[1], z_push]), grip, max_xy=speed)

    def _act(self, target: np.ndarray, grip: np.ndarray, max_xy: float = 1.0) -> np.ndarray:
        a = np.zeros(4)
        a[:3] = self.gain * (target - grip)
        norm = float(np.linalg.norm(a[:2]))
        if norm > max_xy:
            a[:2] *= max_xy / norm
        a[3] = -1.0
        return _clip_action(self.env, a)


EXPERTS: dict[str, Callable[[gym.Env], Expert]] = {
    "pointmaze": PointMazeExpert,
    "fetch-push": FetchPushExpert,
}


class PolicyFileExpert:
    """An expert policy file (``experts/<task>.pt``, written by `cmil-bench expert`): an MLP from
    the task's state observation (the task's flattener applied to the raw observation) to
    ``tanh`` of its output, the squashed mean action of the trained SAC actor. Deterministic."""

    def __init__(self, path, env: gym.Env, flatten: Callable | None = None):
        import torch

        from cmil_bench.errors import UserError

        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # not a torch file, or one with objects beyond tensors and lists
            raise UserError(f"{path}: not a readable expert policy file ({type(e).__name__})") from None
        if not isinstance(payload, dict) or payload.get("format") != "cmil-bench-policy":
            raise UserError(f"{path}: not an expert policy file of cmil-bench (no format "
                            "'cmil-bench-policy'); write one with `cmil-bench expert`")
        if payload.get("version") != 1 or payload.get("output") != "tanh":
            raise UserError(f"{path}: policy file version {payload.get('version')!r} / output "
                            f"{payload.get('output')!r} is not one this version reads (1 / 'tanh')")
        acts = {"relu": torch.relu, "tanh": torch.tanh, "elu": torch.nn.functional.elu}
        if payload.get("activation") not in acts:
            raise UserError(f"{path}: unknown activation {payload.get('activation')!r}")
        self.act_fn = acts[payload["activation"]]
        self.layers = [(lay["weight"].float(), lay["bias"].float()) for lay in payload["layers"]]
        self.flatten = flatten or (lambda raw: np.asarray(raw, dtype=np.float32).ravel())
        self.obs_dim, act_dim = int(payload["obs_dim"]), int(payload["act_dim"])
        if tuple(env.action_space.shape) != (act_dim,):
            raise UserError(f"{path}: the policy acts in {act_dim} dimensions, the task's actions "
                            f"have shape {tuple(env.action_space.shape)}")
        self.env = env

    def reset(self, raw_obs) -> None:  # noqa: ARG002 (the Expert protocol)
        return None

    def act_state(self, state: np.ndarray) -> np.ndarray:
        """Actions for a batch (or one) of flat state observations: the actor's own float32
        arithmetic, so the file acts as the trained actor's evaluations did."""
        import torch

        with torch.no_grad():
            x = torch.as_tensor(np.asarray(state, dtype=np.float32))
            for i, (w, b) in enumerate(self.layers):
                x = torch.nn.functional.linear(x, w, b)
                if i < len(self.layers) - 1:
                    x = self.act_fn(x)
            return torch.tanh(x).numpy()

    def __call__(self, raw_obs) -> np.ndarray:
        state = np.asarray(self.flatten(raw_obs), dtype=np.float32)
        if state.shape != (self.obs_dim,):
            from cmil_bench.errors import UserError
            raise UserError(f"the expert policy reads {self.obs_dim}-d states, the task gives {state.shape}")
        return _clip_action(self.env, self.act_state(state))


def policy_file_expert(path, env: gym.Env, flatten: Callable | None = None) -> Expert:
    """The expert of a task whose definition names a policy file (``experts/<task>.pt``)."""
    return PolicyFileExpert(path, env, flatten)
