"""The latent agent's device path (issue 19): an update never waits for the device, every tensor
it makes is made on an explicit device, bf16 autocast is a switch, and a burst of updates with
its prefetched batches is the same as one update at a time."""

from __future__ import annotations

import copy
import traceback
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from algorithms import cmil, vmail
from algorithms.latent_agent import LatentAgent, LatentTrainer
from cmil_bench.config import build_config

torch.set_num_threads(1)
SMALL = {"deter": 24, "stoch": 6, "hidden": 20, "mlp_layers": "16,16", "actor_layers": "16,16",
         "critic_layers": "16,16", "disc_hidden": "16", "horizon": 4, "batch_size": 3,
         "expert_batch_size": 3, "seq_len": 6, "cnn_depth": 2}


def make(algo: str, pixels: bool = False, **over):
    mod = {"cmil": cmil, "vmail": vmail}[algo]
    base = dict(SMALL, **({"ensemble_size": 5, "target_update_every": 2} if algo == "cmil" else {}))
    base.update({k: str(v) for k, v in over.items()})
    cfg = build_config(mod.Config, mod.PRESETS, None, base, algo)
    agent_cls = cmil.Agent if algo == "cmil" else vmail.Agent
    obs_shape = (64, 64, 3) if pixels else (5,)
    return agent_cls(obs_shape, 2, cfg), obs_shape


def seq_batch(rng, obs_shape, b=3, t=6, act_dim=2):
    first = np.zeros((b, t), bool)
    first[:, 0] = True
    act = rng.uniform(-1, 1, size=(b, t, act_dim)).astype(np.float32)
    act[:, 0] = 0
    if len(obs_shape) == 3:
        obs = rng.integers(0, 256, size=(b, t, *obs_shape), dtype=np.uint8)
    else:
        obs = rng.normal(size=(b, t, *obs_shape)).astype(np.float32)
    return {"obs": obs, "action": act, "is_first": first}


class HostReads(TorchDispatchMode):
    """Records every read of a tensor's value by the host (``.item()``, ``int(t)``, ``bool(t)``,
    ``.tolist()``, indexing with a 0-d tensor): on a GPU each one waits for the device."""

    def __init__(self):
        super().__init__()
        self.where: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.overloadpacket in (torch.ops.aten._local_scalar_dense, torch.ops.aten.item):
            frames = [f for f in traceback.extract_stack() if "/algorithms/" in f.filename]
            self.where.append(f"{frames[-1].filename}:{frames[-1].lineno}" if frames else "?")
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("algo,pixels", [("cmil", False), ("vmail", False), ("cmil", True)])
def test_an_update_never_reads_a_tensor_back_on_the_host(algo, pixels):
    agent, shape = make(algo, pixels)
    rng = np.random.default_rng(0)
    batches = [(seq_batch(rng, shape), seq_batch(rng, shape)) for _ in range(3)]
    agent.train_step(*batches[0])  # the first update reads the update count once
    reads = HostReads()
    with reads:
        for b, e in batches[1:]:  # the second one copies the target critic (target_update_every=2)
            metrics = agent.train_step(b, e)
    assert reads.where == []
    assert all(isinstance(v, torch.Tensor) and v.dim() == 0 for v in metrics.values())
    # the detector is live: reading a metric is a host read
    with reads:
        float(metrics["wm_loss"])
    assert len(reads.where) == 1


@pytest.mark.parametrize("algo", ["cmil", "vmail"])
def test_every_tensor_of_an_update_is_made_on_an_explicit_device(algo):
    """With torch's default device set to "meta", a tensor made without naming its device would
    land there and the update would fail (meta tensors have no data, and ops refuse to mix them
    with the agent's): a CPU-only factory call would break ``device=cuda`` the same way."""
    agent, shape = make(algo)
    rng = np.random.default_rng(1)
    b, e = seq_batch(rng, shape), seq_batch(rng, shape)
    with pytest.raises((RuntimeError, NotImplementedError)):  # the audit bites on a device-less factory
        with torch.device("meta"):
            torch.ones(2, device="cpu") + torch.zeros(2)
    with torch.device("meta"):
        metrics = agent.train_step(b, e)
    assert all(v.device.type == "cpu" for v in metrics.values())
    assert all(p.device.type == "cpu" for p in agent.parameters())


def test_amp_bf16_switch_computes_the_update_in_bfloat16():
    rng = np.random.default_rng(2)
    agent, shape = make("cmil")
    b, e = seq_batch(rng, shape), seq_batch(rng, shape)
    agent_amp = copy.deepcopy(agent)
    agent_amp.cfg = copy.copy(agent.cfg)
    agent_amp.cfg.amp_bf16 = True
    seen = []
    hook = agent_amp.wm.rssm.obs_out.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    torch.manual_seed(0)
    plain = agent.train_step(b, e)
    torch.manual_seed(0)
    amp = agent_amp.train_step(b, e)
    hook.remove()
    assert seen and set(seen) == {torch.bfloat16}
    assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in amp.values())
    # the same update, rounded: close to the float32 one, not equal
    assert float(amp["recon_loss"]) == pytest.approx(float(plain["recon_loss"]), rel=0.05)
    assert float(amp["recon_loss"]) != float(plain["recon_loss"])
    assert all(p.dtype == torch.float32 for p in agent_amp.parameters())


def _trainer(seed: int) -> LatentTrainer:
    rng = np.random.default_rng(0)
    demos = [SimpleNamespace(observations={"observation": rng.normal(size=(9, 5)).astype(np.float32)},
                             actions=rng.uniform(-1, 1, size=(8, 2)).astype(np.float32)) for _ in range(3)]
    run = SimpleNamespace(obs_shape=(5,), act_dim=2, demos=demos, obs_key="observation",
                          device=torch.device("cpu"), rng=np.random.default_rng(seed))
    cfg = build_config(cmil.Config, cmil.PRESETS, None, dict(SMALL, ensemble_size="3"), "cmil")
    torch.manual_seed(seed)
    return LatentTrainer(run, cfg, cmil.Agent)


def test_a_burst_of_updates_with_prefetch_equals_one_update_at_a_time():
    burst, single = _trainer(5), _trainer(5)
    torch.manual_seed(9)
    burst.update(3)
    torch.manual_seed(9)
    for _ in range(3):
        single.update()
    assert burst.grad_steps == single.grad_steps == 3
    a, b = burst.agent.state_dict(), single.agent.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert burst.run.rng.integers(1 << 30) == single.run.rng.integers(1 << 30)
    assert burst.losses.means() == single.losses.means()


@pytest.mark.slow
def test_compile_switch_gives_the_eager_update_up_to_float_noise():
    """``compile=True`` compiles the networks' forward passes (no random draws inside them), so
    two updates match the eager ones up to float noise, and the actor's backward pass, which
    keeps the rollout's graph for the critics, runs through the compiled pieces."""
    rng = np.random.default_rng(3)
    agent, shape = make("cmil")
    batches = [(seq_batch(rng, shape), seq_batch(rng, shape)) for _ in range(2)]
    compiled, _ = make("cmil", compile=True)
    compiled.load_full_state(copy.deepcopy(agent.full_state()))
    out = []
    for a in (agent, compiled):
        torch.manual_seed(0)
        out.append([a.train_step(b, e) for b, e in batches][-1])
    for k in out[0]:
        torch.testing.assert_close(out[1][k], out[0][k], rtol=1e-4, atol=1e-4, msg=k)
    for m in (compiled.wm.rssm.cell, compiled.ac.actor.net):
        assert hasattr(m.forward, "_torchdynamo_orig_callable")
    assert not hasattr(agent.wm.rssm.cell.forward, "_torchdynamo_orig_callable")


@pytest.mark.slow
@pytest.mark.parametrize("algo,task,sets", [
    ("cmil", "fetch-push", {"bc_init_mode": "joint", "pretrain_wm_steps": "2"}),
    ("cmil", "fetch-push", {"bc_init_mode": "frozen"}),
    ("vmail", "fetch-push", {}),
    ("cmil", "fetch-push-pixels", {"augment": "true"}),
])
def test_whole_runs_make_every_tensor_on_an_explicit_device(algo, task, sets, tmp_path, monkeypatch,
                                                            fetch_demos):
    """A smoke run with every step that touches the agent's tensors (updates, world-model
    pre-training, both BC starts, acting, evaluation) under torch's default device "meta": a
    tensor made without naming its device would fail the run, as it would fail on a GPU."""
    import functools

    import algorithms.world_model as world_model
    from algorithms.latent_agent import LatentPolicy
    from cmil_bench.run import execute

    def on_meta(f):
        @functools.wraps(f)
        def wrapped(*args, **kwargs):
            with torch.device("meta"):
                return f(*args, **kwargs)
        return wrapped

    for cls, names in [(LatentAgent, ["train_step"]), (LatentPolicy, ["__call__", "reset"]),
                       (cmil.Agent, ["bc_step", "bc_step_frozen", "demo_posteriors"]),
                       (world_model.WorldModel, ["update"]), (LatentTrainer, ["update"])]:
        for name in names:
            monkeypatch.setattr(cls, name, on_meta(getattr(cls, name)))
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(fetch_demos))
    path = execute(algo=algo, task=task, n_demos=2, seed=0, out=tmp_path / "run", preset="smoke",
                   overrides=sets or None, show_progress=False)
    assert path.exists()
