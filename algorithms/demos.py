"""Demo episodes -> transition arrays, the one flattener of the model-free learners.

``transitions(demos, obs_key)`` returns one row per demo step, episode after episode:
``obs``, ``action`` (float32, clipped to [-1, 1]), ``next_obs``, ``terminated`` (1 on the last
step of an episode that really ended, not at a time limit), ``absorbing`` and ``next_absorbing``
(the absorbing-state indicator of obs / next_obs) and ``weight`` (float32 columns).

Absorbing states (DAC, Kostrikov et al. 2019, Section 4.2; ``absorbing=True``): a terminating
episode does not end in a zero-value terminal; its last step leads to the absorbing state (all
zero observation, indicator 1), which loops on itself under the zero action. So it gives two rows,
``(s_T, a_T) -> s_abs`` and ``(s_abs, 0) -> s_abs``, both with ``terminated = 0``. A truncated
episode keeps its real last next observation.

Subsampling (``subsample = k > 1``; the GAIL and DAC references kept every 20th step of 1000-step
demos): every k-th step of each episode from an offset drawn from ``rng``; the absorbing self-loop
is always kept, with weight 1/k (the DAC reference's correction).
"""

from __future__ import annotations

import numpy as np

from cmil_bench.errors import UserError


def transitions(demos, obs_key: str, absorbing: bool = False, subsample: int = 1,
                rng: np.random.Generator | None = None) -> dict[str, np.ndarray]:
    parts: list[dict[str, np.ndarray]] = []
    for tr in demos:
        obs = np.asarray(tr.observations[obs_key])
        n = len(tr)
        keep = np.ones(n, dtype=bool)
        if subsample > 1:
            off = int(rng.integers(subsample)) if rng is not None else 0
            keep = (np.arange(n) + off) % subsample == 0
        ends = bool(tr.terminated)
        nxt = obs[1 : n + 1].copy()
        term = np.zeros(n, np.float32)
        next_abs = np.zeros(n, np.float32)
        if ends and absorbing:
            nxt[-1] = 0
            next_abs[-1] = 1.0
        elif ends:
            term[-1] = 1.0
        m = int(keep.sum())
        part = {"obs": obs[:n][keep], "action": np.asarray(tr.actions, np.float32)[keep],
                "next_obs": nxt[keep], "terminated": term[keep], "absorbing": np.zeros(m, np.float32),
                "next_absorbing": next_abs[keep], "weight": np.ones(m, np.float32)}
        if ends and absorbing:  # the self-loop of the absorbing state
            loop = {"obs": np.zeros_like(obs[:1]), "action": np.zeros((1, tr.actions.shape[1]), np.float32),
                    "next_obs": np.zeros_like(obs[:1]), "terminated": np.zeros(1, np.float32),
                    "absorbing": np.ones(1, np.float32), "next_absorbing": np.ones(1, np.float32),
                    "weight": np.full(1, 1.0 / subsample, np.float32)}
            part = {k: np.concatenate([v, loop[k]]) for k, v in part.items()}
        parts.append(part)
    if not parts or sum(len(p["action"]) for p in parts) == 0:
        raise UserError("the demos hold no transitions")
    out = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    out["action"] = np.clip(out["action"], -1.0, 1.0)
    return out
