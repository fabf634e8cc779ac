"""The optimisers every algorithm builds: Adam on a flattened module (BC, GAIL, DAC) and Adam with
decoupled weight decay over a parameter list (the world models).

Why our own and not ``torch.optim``: the first ``step`` of a ``torch.optim`` optimiser imports
``torch._dynamo``, which costs 3 to 8 s of CPU per process on this machine, a tenth of a run's
budget in the CPU sweep. Why a *flat* Adam for the model-free learners: their networks are small,
so an update's optimiser work is mostly per-tensor overhead. With a module's parameters moved into
one contiguous tensor, zeroing the gradients, an Adam step, a global-norm clip and a Polyak target
update are a handful of tensor operations whatever the number of layers. Measured once, with
``python -m algorithms.optim`` (2-core machine while another job ran, torch 2.13 CPU, one
thread): the optimiser work of one DAC update at the cpu preset's sizes (three Adam steps, one
clip, two target updates) takes 76 us flat, against 137-156 us with ``AdamW`` below and
368-378 us with ``torch.optim.Adam(foreach=True)`` (424 us without foreach). A whole DAC update
takes about 4 ms (benchmarks/RESULTS.md, Speed), so flat saves about 1.5 % against ``AdamW`` and
7 % against ``torch.optim``; the import cost above is the larger reason.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn as nn

# ------------------------------------------------------------------------ flat Adam


def flatten_parameters(module: nn.Module, with_grad: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Move every parameter of ``module`` into one contiguous tensor (and its gradient into
    another); the parameters become views of it. Returns ``(flat, flat_grad)``."""
    params = list(module.parameters())
    flat = torch.cat([p.detach().reshape(-1) for p in params]) if params else torch.zeros(0)
    grad = torch.zeros_like(flat) if with_grad else None
    i = 0
    for p in params:
        n = p.numel()
        p.data = flat[i : i + n].view_as(p)
        if with_grad:
            p.grad = grad[i : i + n].view_as(p)
        i += n
    return flat, grad


class FlatAdam:
    """Adam (Kingma and Ba; ``torch.optim.Adam``'s update) on a flattened module.

    ``weight_decay`` is ``torch.optim.Adam``'s: an L2 term added to the gradient (coupled).
    Gradients accumulate in place into the flat gradient buffer (never set them to None:
    ``zero_grad`` zeroes the buffer); ``clip_grad_norm`` clips the global norm."""

    def __init__(self, module: nn.Module, lr: float, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0):
        self.param, self.grad = flatten_parameters(module)
        self.lr, self.beta1, self.beta2, self.eps = float(lr), betas[0], betas[1], float(eps)
        self.weight_decay = float(weight_decay)
        self.m = torch.zeros_like(self.param)
        self.v = torch.zeros_like(self.param)
        self.t = 0

    def zero_grad(self) -> None:
        self.grad.zero_()

    def reset(self) -> None:
        """Forget the moment estimates (as a freshly built optimiser)."""
        self.m.zero_()
        self.v.zero_()
        self.t = 0

    def clip_grad_norm(self, max_norm: float) -> torch.Tensor:
        norm = self.grad.norm()
        self.grad.mul_((max_norm / (norm + 1e-6)).clamp(max=1.0))
        return norm

    @torch.no_grad()
    def step(self) -> None:
        self.t += 1
        b1, b2 = self.beta1, self.beta2
        g = self.grad if self.weight_decay == 0 else self.grad.add(self.param, alpha=self.weight_decay)
        self.m.lerp_(g, 1 - b1)
        self.v.mul_(b2).addcmul_(g, g, value=1 - b2)
        denom = (self.v / (1 - b2 ** self.t)).sqrt_().add_(self.eps)
        self.param.addcdiv_(self.m, denom, value=-self.lr / (1 - b1 ** self.t))

    def state_dict(self) -> dict:
        return {"m": self.m.clone(), "v": self.v.clone(), "t": self.t, "lr": self.lr}

    def load_state_dict(self, s: dict) -> None:
        self.m.copy_(s["m"])
        self.v.copy_(s["v"])
        self.t, self.lr = int(s["t"]), float(s["lr"])


class FlatTarget:
    """A frozen copy of a module (a target network, or a moving average for evaluation) kept
    flat, updated by Polyak averaging towards its source's flat parameters."""

    def __init__(self, source: nn.Module):
        self.module = copy.deepcopy(source).requires_grad_(False)
        self.flat, _ = flatten_parameters(self.module, with_grad=False)

    @torch.no_grad()
    def update(self, source_flat: torch.Tensor, tau: float) -> None:
        self.flat.lerp_(source_flat, tau)


# ------------------------------------------------------------------------ AdamW (world models)


class AdamW:
    """Adam with decoupled weight decay as the latent agents' reference (DreamerV2's optimiser)
    applies it: before every step each parameter is multiplied by ``1 - weight_decay``, a
    per-step factor that the learning rate does not scale (``torch.optim.AdamW`` multiplies by
    ``1 - lr * weight_decay``). The decay reaches every parameter, the Adam step those with a
    gradient. All tensors step at once through torch's fused Adam kernel (a per-tensor loop
    where torch has none); ``tests/test_optim.py`` checks the rule against ``torch.optim.Adam``."""

    def __init__(self, params, lr: float, eps: float = 1e-8, weight_decay: float = 0.0,
                 betas: tuple[float, float] = (0.9, 0.999)):
        if not 0.0 <= weight_decay < 1.0:
            raise ValueError(f"weight_decay is a per-step factor in [0, 1), got {weight_decay}")
        self.params = [p for p in params if p.requires_grad]
        self.lr, self.eps, self.weight_decay, self.betas = float(lr), float(eps), float(weight_decay), betas
        self.exp_avg: list[torch.Tensor] = []  # created on the parameters' device at first use,
        self.exp_avg_sq: list[torch.Tensor] = []  # so the module may move (.to) after this
        self.steps: list[torch.Tensor] = []
        self.fused = hasattr(torch, "_fused_adam_")

    def _init_state(self) -> None:
        if not self.exp_avg:
            self.exp_avg = [torch.zeros_like(p) for p in self.params]
            self.exp_avg_sq = [torch.zeros_like(p) for p in self.params]
            self.steps = [torch.zeros((), device=p.device) for p in self.params]

    def zero_grad(self, set_to_none: bool = True) -> None:  # noqa: ARG002 (torch.optim signature)
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        idx = [i for i, p in enumerate(self.params) if p.grad is not None]
        if not idx:
            return
        self._init_state()
        if self.weight_decay > 0:
            torch._foreach_mul_(self.params, 1.0 - self.weight_decay)
        ps = [self.params[i] for i in idx]
        grads = [p.grad for p in ps]
        m, v, steps = ([lst[i] for i in idx] for lst in (self.exp_avg, self.exp_avg_sq, self.steps))
        torch._foreach_add_(steps, 1.0)
        b1, b2 = self.betas
        if self.fused:
            torch._fused_adam_(ps, grads, m, v, [], steps, lr=self.lr, beta1=b1, beta2=b2,
                               weight_decay=0.0, eps=self.eps, amsgrad=False, maximize=False)
            return
        for p, g, mi, vi, st in zip(ps, grads, m, v, steps):
            t = float(st)
            mi.lerp_(g, 1.0 - b1)
            vi.mul_(b2).addcmul_(g, g, value=1.0 - b2)
            denom = (vi.sqrt() / math.sqrt(1.0 - b2 ** t)).add_(self.eps)
            p.addcdiv_(mi, denom, value=-self.lr / (1.0 - b1 ** t))

    def state_dict(self) -> dict:
        self._init_state()
        return {"exp_avg": self.exp_avg, "exp_avg_sq": self.exp_avg_sq, "steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        self._init_state()
        for key in ("exp_avg", "exp_avg_sq", "steps"):
            mine, theirs = getattr(self, key), state[key]
            if len(mine) != len(theirs):
                raise ValueError(f"optimiser state has {len(theirs)} tensors, expected {len(mine)}")
            for a, b in zip(mine, theirs):
                a.copy_(b)


class SGD:
    """Plain stochastic gradient descent, ``p -= lr * grad``: no momentum, no weight decay, no
    state (CMIL's BC initialisation steps the actor with one of these, apart from its Adam)."""

    def __init__(self, params, lr: float):
        self.params = [p for p in params if p.requires_grad]
        self.lr = float(lr)

    def zero_grad(self, set_to_none: bool = True) -> None:  # noqa: ARG002 (torch.optim signature)
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        ps = [p for p in self.params if p.grad is not None]
        if ps:
            torch._foreach_add_(ps, [p.grad for p in ps], alpha=-self.lr)


def make_optimizer(params, lr: float, eps: float, weight_decay: float) -> AdamW:
    return AdamW(params, lr=lr, eps=eps, weight_decay=weight_decay)


def clip_and_step(opt: AdamW, params, clip: float) -> None:
    """Clip the global gradient norm of ``params`` at ``clip`` (0 = no clipping), then step."""
    if clip > 0:
        nn.utils.clip_grad_norm_(list(params), clip, foreach=True)
    opt.step()


# ------------------------------------------------------------------------ the measurement


def _measure(repeats: int = 2000) -> dict[str, float]:
    """Microseconds of optimiser work per DAC update (cpu preset: 2 x 64 twin critic, actor and
    discriminator on pointmaze's 4-d state): zero the gradients and step the critic, actor (its
    gradient clipped at norm 40) and discriminator, and Polyak-update the two targets."""
    import time

    from algorithms.nets import EnsembleMLP, mlp

    torch.set_num_threads(1)

    def nets():
        torch.manual_seed(0)
        return EnsembleMLP(2, 4 + 1 + 2, (64, 64), 1), mlp(5, (64, 64), 4), mlp(7, (64, 64), 1, act="tanh")

    def timed(fn) -> float:
        for _ in range(50):
            fn()
        t0 = time.perf_counter()
        for _ in range(repeats):
            fn()
        return 1e6 * (time.perf_counter() - t0) / repeats

    out = {}
    critic, actor, disc = nets()
    opts = [FlatAdam(m, 1e-3) for m in (critic, actor, disc)]
    targets = [FlatTarget(critic), FlatTarget(actor)]
    for o in opts:
        o.grad.normal_()

    def flat_cycle():
        for i, o in enumerate(opts):
            o.zero_grad()
            o.grad.add_(1e-3)
            if i == 1:
                o.clip_grad_norm(40.0)
            o.step()
        targets[0].update(opts[0].param, 0.005)
        targets[1].update(opts[1].param, 0.005)

    def list_cycle(make):
        mods = nets()
        tgts = [[p.detach().clone() for p in m.parameters()] for m in mods[:2]]
        ps = [list(m.parameters()) for m in mods]
        ls = [make(p) for p in ps]
        for p in ps:
            for q in p:
                q.grad = torch.zeros_like(q)

        def cycle():
            for i, (o, p) in enumerate(zip(ls, ps)):
                grads = [q.grad for q in p]
                torch._foreach_zero_(grads)
                torch._foreach_add_(grads, 1e-3)
                if i == 1:
                    nn.utils.clip_grad_norm_(p, 40.0, foreach=True)
                o.step()
            for t, p in zip(tgts, ps):
                torch._foreach_lerp_(t, [q.detach() for q in p], 0.005)
        return cycle

    out["flat_adam_us"] = timed(flat_cycle)
    out["adamw_fused_us"] = timed(list_cycle(lambda p: AdamW(p, 1e-3)))
    out["torch_adam_foreach_us"] = timed(list_cycle(lambda p: torch.optim.Adam(p, 1e-3, foreach=True)))
    out["torch_adam_default_us"] = timed(list_cycle(lambda p: torch.optim.Adam(p, 1e-3)))
    return out


if __name__ == "__main__":
    for k, v in _measure().items():
        print(f"{k}: {v:.1f}")
