"""Networks: the Conv4 block order is an exact rewrite; ResNets pick their stem by image size."""

import torch
from torch import nn

from dfml.models import build_classifier
from dfml.models.resnet import LARGE


def _usual_order(model: nn.Module) -> nn.Module:
    """The same Conv4 with each block as conv, BN, ReLU, maxpool (the textbook order)."""
    layers = list(model.features)
    blocks = [layers[i:i + 4] for i in range(0, len(layers), 4)]
    assert all(isinstance(b[2], nn.MaxPool2d) and isinstance(b[3], nn.ReLU) for b in blocks)
    model.features = nn.Sequential(*[m for conv, bn, pool, relu in blocks for m in (conv, bn, relu, pool)])
    return model


def test_conv4_pool_before_relu_is_bit_identical():
    torch.manual_seed(0)
    ours = build_classifier("conv4", 3, 5, 20, track_bn_stats=False)
    usual = _usual_order(build_classifier("conv4", 3, 5, 20, track_bn_stats=False))
    usual.load_state_dict(ours.state_dict())
    x = torch.rand(6, 3, 20, 20)
    y = torch.tensor([0, 1, 2, 3, 4, 0])
    outs, grads = [], []
    for m in (ours, usual):
        out = m(x)
        torch.nn.functional.cross_entropy(out, y).backward()
        outs.append(out.detach())
        grads.append([p.grad.clone() for p in m.parameters()])
    assert torch.equal(outs[0], outs[1])
    assert all(torch.equal(a, b) for a, b in zip(*grads))


def test_resnet_stem_by_image_size():
    small = build_classifier("resnet10", 3, 5, LARGE - 4)
    large = build_classifier("resnet10", 3, 5, LARGE)
    assert small.stem[0].stride == (1, 1) and len(small.stem) == 3
    assert large.stem[0].stride == (2, 2) and isinstance(large.stem[3], nn.MaxPool2d)
    assert large(torch.rand(2, 3, 84, 84)).shape == (2, 5)
