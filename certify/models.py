"""Models: a small CNN (the CPU default), a CIFAR-stem ResNet-18 from torchvision, an MLP, and a
CPU-sized victim panel: the CIFAR ResNet-20, a small VGG and a tiny ViT.

Each model exposes `features(x)` (penultimate features after global pooling) and `head` (the
final linear layer), so MI-UE and the MI score can read features.
"""
from __future__ import annotations

import torch
from torch import nn

from certify.errors import UserError
from certify.registry import Registry

MODELS = Registry("model")
# The smallest image side each model trains on. Training can meet a batch of one image (the last,
# partial batch), and BatchNorm in training mode needs more than one value per channel, so the last
# BatchNorm must still see at least 2x2 pixels: the CNN and the VGG halve the side twice (8 -> 2), the
# ResNet-18 three times rounding up (9 -> 2), the ResNet-20 twice rounding up (5 -> 2). The ViT has no
# BatchNorm: one patch is enough. `tests/test_data.py` checks each minimum and the side below it.
CNN_MIN_SIDE, RESNET_MIN_SIDE, RESNET20_MIN_SIDE, VIT_PATCH = 8, 9, 5, 4


class GlobalAvgPool(nn.Module):
    """AdaptiveAvgPool2d(1) + Flatten with the same values: on the CPU that mean is computed as this
    sum, then this division. The sum's backward is a broadcast view, which keeps the channels-last
    layout the training feeds; the mean's materialises an NCHW gradient, and the ReLU's backward
    before it ran ~10x slower on the mixed layouts."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.sum((2, 3)) / (x.shape[2] * x.shape[3])


class SmallCNN(nn.Module):
    """Three conv-BN-ReLU blocks and a linear head; width 8 has ~6.5 k parameters on CIFAR."""

    def __init__(self, in_channels: int, num_classes: int, width: int = 8):
        super().__init__()
        w = width
        # pool before ReLU: max commutes with the monotone ReLU, so values and gradients are bit for bit
        # those of ReLU-then-pool, with the ReLU on a quarter of the values (~5% of a training's time).
        # Only parameter-free modules swap places: the state_dict's names are unchanged.
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, w, 3, padding=1), nn.BatchNorm2d(w), nn.MaxPool2d(2), nn.ReLU(),
            nn.Conv2d(w, 2 * w, 3, padding=1), nn.BatchNorm2d(2 * w), nn.MaxPool2d(2), nn.ReLU(),
            nn.Conv2d(2 * w, 4 * w, 3, padding=1), nn.BatchNorm2d(4 * w), nn.ReLU(), GlobalAvgPool(),
        )
        self.head = nn.Linear(4 * w, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


class CifarResNet18(nn.Module):
    """torchvision's ResNet-18 with the CIFAR stem (3x3 conv, no max-pool) for 32x32 inputs."""

    def __init__(self, in_channels: int, num_classes: int):
        super().__init__()
        from torchvision.models import resnet18  # imported on use: it costs seconds at start-up

        net = resnet18(num_classes=num_classes)
        net.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
        net.maxpool = nn.Identity()
        self.head = net.fc
        net.fc = nn.Identity()
        self.net = net

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.net(x))


class CifarResNet20(nn.Module):
    """The CIFAR ResNet-20 of He et al. 2016 (~0.27 M parameters on CIFAR): a 3x3 conv stem to 16
    channels, 3 stages of 3 torchvision BasicBlocks with 16/32/64 channels (strides 1, 2, 2), global
    average pooling and a linear head. Where a block changes the shape its shortcut is a 1x1 conv + BN
    ("option B"); He et al.'s CIFAR net used option A (strided identity, zero-padded channels)."""

    def __init__(self, in_channels: int, num_classes: int):
        super().__init__()
        from torchvision.models.resnet import BasicBlock  # imported on use: it costs seconds at start-up

        layers: list[nn.Module] = [nn.Conv2d(in_channels, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16),
                                   nn.ReLU()]
        width_in = 16
        for width, stride in ((16, 1), (32, 2), (64, 2)):
            for block in range(3):
                s = stride if block == 0 else 1
                shortcut = None
                if s != 1 or width_in != width:
                    shortcut = nn.Sequential(nn.Conv2d(width_in, width, 1, stride=s, bias=False),
                                             nn.BatchNorm2d(width))
                layers.append(BasicBlock(width_in, width, s, shortcut))
                width_in = width
        self.body = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(64, num_classes)
        for m in self.body.modules():  # He et al.'s init, as torchvision's ResNet does (not PyTorch's default)
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


class SmallVGG(nn.Module):
    """VGG-style stages of two conv3x3-BN-ReLU each, a 2x2 max-pool between stages, global average
    pooling and a linear head."""

    def __init__(self, in_channels: int, num_classes: int, widths: tuple[int, ...] = (32, 64, 128)):
        super().__init__()
        layers: list[nn.Module] = []
        width_in = in_channels
        for stage, width in enumerate(widths):
            if stage:
                layers.append(nn.MaxPool2d(2))
            for _ in range(2):
                layers += [nn.Conv2d(width_in, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU()]
                width_in = width
        self.body = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(width_in, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


class TinyViT(nn.Module):
    """torchvision's VisionTransformer at CPU size: 4x4 patches of a square image whose side the patch
    divides, the class token's final embedding as features."""

    def __init__(self, shape: tuple[int, int, int], num_classes: int, layers: int = 4, heads: int = 4,
                 hidden: int = 64, mlp: int = 128):
        super().__init__()
        c, h, w = shape
        if h != w or h % VIT_PATCH:
            raise UserError(f"model 'vit-tiny' needs square images whose side is a multiple of its "
                            f"{VIT_PATCH}-pixel patch, the dataset's are {h}x{w}; choose another --model "
                            f"or --image-size")
        from torchvision.models import VisionTransformer  # imported on use: it costs seconds at start-up

        net = VisionTransformer(h, VIT_PATCH, layers, heads, hidden, mlp, num_classes=num_classes)
        if c != 3:  # torchvision's patch projection takes RGB; same layer and init for c channels
            net.conv_proj = nn.Conv2d(c, hidden, VIT_PATCH, stride=VIT_PATCH)
            nn.init.trunc_normal_(net.conv_proj.weight, std=(1 / (c * VIT_PATCH ** 2)) ** 0.5)
            nn.init.zeros_(net.conv_proj.bias)
        self.head = net.heads.head
        net.heads = nn.Identity()
        self.net = net

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.net(x))


class MLP(nn.Module):
    def __init__(self, in_features: int, num_classes: int, hidden: int = 256):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(in_features, hidden), nn.ReLU(),
                                  nn.Linear(hidden, hidden), nn.ReLU())
        self.head = nn.Linear(hidden, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


@MODELS.register("cnn", "small 3-conv BatchNorm CNN (width 8: ~6.5 k parameters); the CPU default",
                 min_side=CNN_MIN_SIDE)
def _cnn(shape, num_classes, width: int = 8):
    return SmallCNN(shape[0], num_classes, width)


@MODELS.register("cnn16", "the small CNN at width 16 (~26 k parameters)", min_side=CNN_MIN_SIDE)
def _cnn16(shape, num_classes):
    return SmallCNN(shape[0], num_classes, 16)


@MODELS.register("resnet18", "CIFAR-stem ResNet-18 built from torchvision's (11 M parameters); for GPUs",
                 min_side=RESNET_MIN_SIDE)
def _resnet18(shape, num_classes):
    return CifarResNet18(shape[0], num_classes)


@MODELS.register("mlp", "two-hidden-layer MLP (256 units)")
def _mlp(shape, num_classes):
    c, h, w = shape
    return MLP(c * h * w, num_classes)


# The panel's recipes: each model's training on cifar10-mini as measured with bench/victim_fit.py
# (reports/BENCHMARKS.md, "Does the victim fit"), every optimizer field spelled out so a run's own
# `train.*` cannot change what was measured; the flip stays the run's (the data's), as it was measured.
SGD_AS_MEASURED = {"lr": 0.05, "weight_decay": 5e-4, "crop": 0}
RESNET20_RECIPE = {"epochs": 20, "batch_size": 32, **SGD_AS_MEASURED}  # fits 0.968 of the training split
VGG_RECIPE = {"epochs": 30, "batch_size": 32, **SGD_AS_MEASURED}  # fits 0.994; 20 epochs fit 0.906
VIT_RECIPE = {"epochs": 30, "batch_size": 64, **SGD_AS_MEASURED}  # fits only 0.561; batch 32 fit less


@MODELS.register("resnet20", "CIFAR ResNet-20 (He et al. 2016; 1x1-conv shortcuts), ~0.27 M parameters",
                 min_side=RESNET20_MIN_SIDE, recipe=RESNET20_RECIPE)
def _resnet20(shape, num_classes):
    return CifarResNet20(shape[0], num_classes)


@MODELS.register("vgg-small", "small VGG: 2 conv-BN-ReLU per stage, widths 32-64-128, ~0.29 M parameters",
                 min_side=CNN_MIN_SIDE, recipe=VGG_RECIPE)
def _vgg_small(shape, num_classes):
    return SmallVGG(shape[0], num_classes)


@MODELS.register("vit-tiny", "torchvision ViT, 4x4 patches, 4 layers, 4 heads, hidden 64 (~0.14 M parameters); "
                 "square sides divisible by 4", min_side=VIT_PATCH, recipe=VIT_RECIPE)
def _vit_tiny(shape, num_classes):
    return TinyViT(shape, num_classes)


def check_input_size(arch: str, shape: tuple[int, int, int]) -> None:
    """Images smaller than the model trains on are refused where dataset and model first meet."""
    need, (_, h, w) = MODELS.get(arch).min_side, shape
    if min(h, w) < need:
        raise UserError(f"model {arch!r} needs images of at least {need}x{need} pixels, the dataset's are "
                        f"{h}x{w}; choose another --model (see `certify list`) or larger images")


def victim_training(arch: str, base, overrides: dict | None = None):
    """The training a victim of `arch` gets in a run whose training is `base` (a TrainConfig): `base`
    with the architecture's registered recipe, then the user's `overrides` (config `victim_train.ARCH`),
    on top. Data-driven fields (the flip) stay the run's."""
    import dataclasses

    return dataclasses.replace(base, **{**dict(MODELS.get(arch).recipe), **(overrides or {})})


def build_model(arch: str, shape: tuple[int, int, int], num_classes: int, seed: int) -> nn.Module:
    """The model's initial weights depend only on `seed` (global RNG state is restored after)."""
    factory = MODELS.get(arch).factory
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return factory(tuple(shape), num_classes)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def trainable(model: nn.Module) -> dict[str, torch.Tensor]:
    """The parameters that weight noise and recovery attacks move: conv/linear weights and biases
    and BN affine parameters, never BN buffers."""
    return {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
