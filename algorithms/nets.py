"""Network parts that several algorithms share: MLPs, the stacked-weight ensemble, the 64x64 CNN
encoder and the pixel trunk in front of it, random-shift augmentation, and Keras's default
initialisation (``keras_init_``) for the agents whose references are written in Keras."""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

ACTIVATIONS = {"relu": nn.ReLU, "elu": nn.ELU, "tanh": nn.Tanh, "silu": nn.SiLU}


def activation(name: str) -> type[nn.Module]:
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; known: {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]


def mlp(in_dim: int, hidden: Sequence[int], out_dim: int, act: str = "relu",
        out_act: nn.Module | None = None, layer_norm: bool = False) -> nn.Sequential:
    layers: list[nn.Module] = []
    d = in_dim
    for h in hidden:
        layers.append(nn.Linear(d, h))
        if layer_norm:
            layers.append(nn.LayerNorm(h))
        layers.append(activation(act)())
        d = h
    layers.append(nn.Linear(d, out_dim))
    if out_act is not None:
        layers.append(out_act)
    return nn.Sequential(*layers)


class EnsembleLinear(nn.Module):
    """``n`` independent linear layers applied with one batched matmul: (n, B, i) -> (n, B, o).
    Each member is initialised like ``nn.Linear`` (weight, then bias)."""

    def __init__(self, n: int, in_dim: int, out_dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n, in_dim, out_dim))
        self.bias = nn.Parameter(torch.empty(n, 1, out_dim))
        bound = 1.0 / math.sqrt(in_dim)
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.bias, x, self.weight)


def glorot_uniform_(weight: torch.Tensor, fan_in: int, fan_out: int) -> torch.Tensor:
    """Keras's default kernel initialiser in place: U(-b, b) with b = sqrt(6 / (fan_in + fan_out))."""
    bound = math.sqrt(6.0 / (fan_in + fan_out))
    with torch.no_grad():
        return weight.uniform_(-bound, bound)


def keras_init_(module: nn.Module) -> nn.Module:
    """Re-initialise every layer of ``module`` as Keras does by default: glorot-uniform weights
    and zero biases for ``nn.Linear``, ``EnsembleLinear`` (fans of one member), ``nn.Conv2d`` and
    ``nn.ConvTranspose2d`` (fans times the kernel area, as Keras counts them), unit gain and zero
    offset for ``nn.LayerNorm``. A layer that holds a part of one Keras layer (a dense layer on a
    concatenation split into one ``nn.Linear`` per input, or two dense heads stacked into one)
    names the Keras layer's fans in a ``glorot_fans = (fan_in, fan_out)`` attribute."""
    for m in module.modules():
        weight = getattr(m, "weight", None)
        if isinstance(m, nn.LayerNorm):
            if m.elementwise_affine:
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            continue
        if isinstance(m, (nn.Linear, EnsembleLinear)):
            fans = (weight.shape[-1], weight.shape[-2]) if isinstance(m, nn.Linear) else weight.shape[-2:]
        elif isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            area = weight[0, 0].numel()
            fans = (weight.shape[1] * area, weight.shape[0] * area)
        else:
            continue
        glorot_uniform_(weight, *getattr(m, "glorot_fans", fans))
        if getattr(m, "bias", None) is not None:
            nn.init.zeros_(m.bias)
    return module


class EnsembleMLP(nn.Module):
    """``n`` independent MLPs with stacked weights, evaluated together on one input:
    x (..., in) -> (n, ..., out). (Twin critics, Q ensembles.)"""

    def __init__(self, n: int, in_dim: int, hidden: Sequence[int], out_dim: int, act: str = "relu"):
        super().__init__()
        layers: list[nn.Module] = []
        d = in_dim
        for h in hidden:
            layers += [EnsembleLinear(n, d, h), activation(act)()]
            d = h
        layers.append(EnsembleLinear(n, d, out_dim))
        self.net = nn.Sequential(*layers)
        self.n = n

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        x = x.reshape(-1, x.shape[-1])
        return self.net(x.unsqueeze(0).expand(self.n, *x.shape)).reshape(self.n, *lead, -1)


class ConvEncoder(nn.Module):
    """DreamerV2-style encoder for (B, 64, 64, 3) uint8 frames: four stride-2 convolutions of
    depth d, 2d, 4d, 8d and the given kernels, flattened to ``out_dim`` features."""

    def __init__(self, depth: int = 32, kernels: Sequence[int] = (4, 4, 4, 4), act: str = "elu",
                 image_size: int = 64):
        super().__init__()
        layers: list[nn.Module] = []
        ch = 3
        for i, k in enumerate(kernels):
            layers += [nn.Conv2d(ch, depth * 2 ** i, k, stride=2), activation(act)()]
            ch = depth * 2 ** i
        self.net = nn.Sequential(*layers)
        with torch.no_grad():
            self.out_dim = int(self.net(torch.zeros(1, 3, image_size, image_size)).numel())

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        x = preprocess_image(img)
        lead = x.shape[:-3]
        x = self.net(x.reshape(-1, *x.shape[-3:]))
        return x.reshape(*lead, -1)


def preprocess_image(img: torch.Tensor) -> torch.Tensor:
    """uint8 (..., H, W, 3) -> float (..., 3, H, W) in [-0.5, 0.5]."""
    if img.dtype == torch.uint8:
        img = img.float() / 255.0 - 0.5
    return img.movedim(-1, -3)


def random_shift(img: torch.Tensor, pad: int = 4, generator: torch.Generator | None = None) -> torch.Tensor:
    """Random-shift augmentation: replicate-pad by ``pad`` and crop back at a random offset per
    image. Works on (B, H, W, C) uint8 or float frames and returns the input's dtype."""
    b, h, w, c = img.shape
    x = img.permute(0, 3, 1, 2).float()
    x = F.pad(x, (pad, pad, pad, pad), mode="replicate")
    ox = torch.randint(0, 2 * pad + 1, (b,), generator=generator, device=img.device)
    oy = torch.randint(0, 2 * pad + 1, (b,), generator=generator, device=img.device)
    x = _crop(x, oy, ox, h, w)
    out = x.permute(0, 2, 3, 1)
    return out.to(img.dtype) if img.dtype == torch.uint8 else out


def _crop(x: torch.Tensor, oy: torch.Tensor, ox: torch.Tensor, h: int, w: int) -> torch.Tensor:
    b, c, hp, wp = x.shape
    ar_h = torch.arange(h, device=x.device)
    ar_w = torch.arange(w, device=x.device)
    rows = (oy[:, None] + ar_h[None])  # (B, h)
    cols = (ox[:, None] + ar_w[None])  # (B, w)
    idx = rows[:, :, None] * wp + cols[:, None, :]  # (B, h, w) flat index into (hp*wp)
    flat = x.reshape(b, c, hp * wp)
    return flat.gather(2, idx.reshape(b, 1, h * w).expand(b, c, h * w)).reshape(b, c, h, w)


class ObsEncoder(nn.Module):
    """Identity for state vectors, ConvEncoder for pixels; ``out_dim`` is the feature size."""

    def __init__(self, obs_shape: Sequence[int], depth: int = 32, act: str = "elu"):
        super().__init__()
        self.pixels = len(obs_shape) == 3
        if self.pixels:
            self.conv = ConvEncoder(depth=depth, act=act, image_size=obs_shape[0])
            self.out_dim = self.conv.out_dim
        else:
            self.out_dim = int(obs_shape[0])

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.conv(obs) if self.pixels else obs.float()


class PixelTrunk(nn.Module):
    """The pixel trunk of the model-free learners: the CNN encoder, then linear + LayerNorm + tanh
    to ``feature_dim`` features (DrQ's)."""

    def __init__(self, obs_shape: Sequence[int], cnn_depth: int, feature_dim: int):
        super().__init__()
        self.base = ObsEncoder(obs_shape, depth=cnn_depth)
        self.trunk = nn.Sequential(nn.Linear(self.base.out_dim, feature_dim), nn.LayerNorm(feature_dim),
                                   nn.Tanh())
        self.out_dim = feature_dim

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.trunk(self.base(obs))
