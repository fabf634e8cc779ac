"""algorithms/nets.py: the stacked-weight ensemble and the pixel trunk."""

from __future__ import annotations

import torch
import torch.nn as nn

from algorithms.nets import EnsembleLinear, EnsembleMLP, PixelTrunk


def test_ensemble_members_are_independent_linear_layers():
    torch.manual_seed(0)
    layer = EnsembleLinear(3, 4, 2)
    x = torch.randn(3, 5, 4)
    out = layer(x)
    for k in range(3):
        torch.testing.assert_close(out[k], x[k] @ layer.weight[k] + layer.bias[k])
    assert layer.weight.abs().max() <= 0.5  # nn.Linear's bound 1/sqrt(4)


def test_ensemble_mlp_equals_separate_mlps_with_its_weights():
    torch.manual_seed(1)
    ens = EnsembleMLP(2, 3, (8, 8), 1, "relu")
    x = torch.randn(6, 3)
    out = ens(x)
    assert out.shape == (2, 6, 1)
    layers = [m for m in ens.net if isinstance(m, EnsembleLinear)]
    for k in range(2):
        h = x
        for i, lin in enumerate(layers):
            h = h @ lin.weight[k] + lin.bias[k]
            if i < len(layers) - 1:
                h = torch.relu(h)
        torch.testing.assert_close(out[k], h)
    assert not torch.allclose(out[0], out[1])  # different initialisations
    seq = torch.randn(4, 6, 3)  # any leading shape
    torch.testing.assert_close(ens(seq), ens(seq.reshape(24, 3)).reshape(2, 4, 6, 1))


def test_pixel_trunk_maps_frames_to_bounded_features_and_trains():
    torch.manual_seed(2)
    trunk = PixelTrunk((64, 64, 3), cnn_depth=4, feature_dim=16)
    frames = torch.randint(0, 256, (2, 64, 64, 3), dtype=torch.uint8)
    f = trunk(frames)
    assert f.shape == (2, 16) and trunk.out_dim == 16 and f.abs().max() <= 1
    f.sum().backward()
    conv = next(m for m in trunk.modules() if isinstance(m, nn.Conv2d))
    assert conv.weight.grad is not None and conv.weight.grad.abs().sum() > 0
