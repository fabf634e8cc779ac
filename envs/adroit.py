"""Adroit hand tasks of D4RL: their success rule and reference scores (tasks in envs/tasks.yaml).

``door``, ``hammer``, ``pen`` and ``relocate`` (state) and their ``-pixels`` twins run
gymnasium-robotics ``AdroitHand{Door,Hammer,Pen,Relocate}-v1`` (dense reward) with D4RL's episode
lengths (200 steps; pen 100) and train on the 25 human demonstrations of the Minari datasets
``D4RL/<task>/human-v2`` (``--demo-source`` may name the ``cloned``/``expert`` datasets or a D4RL
HDF5 file instead).

* Success follows D4RL/DAPG (``evaluate_success`` of the hand_dapg envs): an episode succeeds when
  the env's per-step ``info['success']`` (goal achieved) holds on more than 25 steps (pen: more
  than 20), not merely at one step or at the last one.
* norm_score uses D4RL's reference scores (``d4rl.infos`` REF_MIN_SCORE / REF_MAX_SCORE: a random
  policy and the DAPG expert), so it reads like a D4RL normalised score (x100). Caveat: in
  gymnasium-robotics 1.2.1-1.4.2 the dense rewards of door, hammer and relocate v1 differ from
  D4RL's in the sign of the small hand-to-object distance term (gymnasium-robotics PR 220), which
  shifts returns by a few units out of the thousands these references span.
* Pixels: 64x64 frames from each env's default camera.

The datasets are not part of the project and nothing downloads at run time: on a machine with
network, ``minari download D4RL/door/human-v2`` puts one under ``~/.minari/datasets`` (or under
``$MINARI_DATASETS_PATH``); copy that folder to machines without network.
"""

from __future__ import annotations

# The tasks (door, hammer, pen, relocate) are defined in envs/tasks.yaml; these tables repeat their
# D4RL facts, and tests/test_adroit.py checks that the two agree.
# D4RL reference returns (d4rl/infos.py, identical for the human/cloned/expert datasets).
D4RL_REF_SCORES: dict[str, tuple[float, float]] = {
    "door": (-56.512833, 2880.5693087298737),
    "hammer": (-274.856578, 12794.134825156867),
    "pen": (96.262799, 3076.8331017826877),
    "relocate": (-6.425911, 4233.877797728884),
}
# (env id, episode steps as in D4RL, success threshold: more than this many goal-achieved steps)
ADROIT: dict[str, tuple[str, int, int]] = {
    "door": ("AdroitHandDoor-v1", 200, 25),
    "hammer": ("AdroitHandHammer-v1", 200, 25),
    "pen": ("AdroitHandPen-v1", 100, 20),
    "relocate": ("AdroitHandRelocate-v1", 200, 25),
}
DEFAULT_DATASET = "human"


def adroit_dataset_id(task: str, kind: str = DEFAULT_DATASET) -> str:
    """The Minari id of an Adroit D4RL dataset, e.g. ``D4RL/door/human-v2``."""
    return f"D4RL/{task}/{kind}-v2"


class GoalStepsSuccess:
    """D4RL's Adroit success: ``info['success']`` true on more than ``min_steps`` steps."""

    def __init__(self, min_steps: int, key: str = "success"):
        self.min_steps = int(min_steps)
        self.key = key

    def __call__(self, infos: list[dict]) -> bool:
        return sum(bool(i.get(self.key, False)) for i in infos) > self.min_steps

    def __repr__(self) -> str:
        return f"GoalStepsSuccess(more than {self.min_steps} steps with info[{self.key!r}])"
