"""What the cheap tasks need beyond YAML: the narrowed FetchPush env class.

The tasks themselves (``pointmaze-umaze``, ``fetch-push`` and their pixel twins) are defined in
envs/tasks.yaml; ``fetch-push`` names ``FetchPushForwardEnv`` as its ``entry_point``.
"""

from __future__ import annotations

import numpy as np
from gymnasium.utils import EzPickle


def _fetch_push_base():
    from gymnasium_robotics.envs.fetch.push import MujocoFetchPushEnv

    return MujocoFetchPushEnv


class FetchPushForwardEnv(_fetch_push_base(), EzPickle):
    """FetchPush-v4 with a narrower start and goal distribution.

    The block starts ``object_offset`` (+- ``object_noise``, uniform per axis; metres, table x/y)
    from the gripper's initial position and the goal lies ``goal_offset`` (+- ``goal_noise``)
    from it, so the gripper always starts behind the block (no walk-around). With the defaults the
    push runs 10-20 cm at up to about 35 degrees off straight ahead. Everything else (robot, block,
    table, 50-step limit, success within 5 cm, rewards) is FetchPush-v4's.
    """

    def __init__(self, object_offset=(0.0, 0.10), object_noise=(0.0, 0.0),
                 goal_offset=(0.0, 0.25), goal_noise=(0.07, 0.045), reward_type="sparse", **kwargs):
        self._object_offset = np.asarray(object_offset, dtype=np.float64)
        self._object_noise = np.asarray(object_noise, dtype=np.float64)
        self._goal_offset = np.asarray(goal_offset, dtype=np.float64)
        self._goal_noise = np.asarray(goal_noise, dtype=np.float64)
        super().__init__(reward_type=reward_type, **kwargs)
        EzPickle.__init__(self, object_offset=object_offset, object_noise=object_noise,
                          goal_offset=goal_offset, goal_noise=goal_noise,
                          reward_type=reward_type, **kwargs)

    def _reset_sim(self):
        super()._reset_sim()
        qpos = self._utils.get_joint_qpos(self.model, self.data, "object0:joint").copy()
        qpos[:2] = self.initial_gripper_xpos[:2] + self._object_offset + self.np_random.uniform(
            -self._object_noise, self._object_noise)
        self._utils.set_joint_qpos(self.model, self.data, "object0:joint", qpos)
        self._mujoco.mj_forward(self.model, self.data)
        return True

    def _sample_goal(self):
        goal = np.array(self.initial_gripper_xpos[:3], dtype=np.float64)
        goal[:2] += self._goal_offset + self.np_random.uniform(-self._goal_noise, self._goal_noise)
        goal[2] = self.height_offset
        return goal
