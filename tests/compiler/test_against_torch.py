"""PyTorch as an independent oracle for the compiler's shapes, parameters, MACs and receptive fields.

For the example networks, the same architecture is written by hand in torch.nn
(small builders below, no torchvision), run once on zeros of the input shape
(batch 1; on the `meta` device for the big ones, which propagates shapes
without computing), and compared with `compile_file`:

- total parameters (torch `parameters()`: batchnorm running statistics are
  buffers on both sides) and total MACs (forward hooks: conv
  out.numel() * in/groups * kh * kw, transposed conv in.numel() * out/groups *
  kh * kw, linear in * out; bias excluded);
- layer by layer, the multiset of (op, output shape, parameters, MACs) of
  every convolution, transposed convolution, linear, pooling, unpooling,
  upsampling, batchnorm and LRN layer -- a multiset, so that the order in
  which parallel branches are visited does not matter;
- the output shapes.

The receptive-field tests measure fields empirically: all weights set to
positive constants (biases zero, batchnorm at its identity statistics), a
forward on ones and the gradient of one centre output unit (summed over
channels) with respect to the input; the non-zero extent of that gradient is
the field. Max pooling routes a gradient to one element per window only, so the
twins use average pooling of the same geometry there (the field is a property
of the geometry, not of the reduction). Channel widths are scaled down for
speed: the field does not depend on them.
"""
from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
nn = torch.nn
F = torch.nn.functional

from cnnc.compiler.driver import compile_file  # noqa: E402

pytestmark = pytest.mark.torch

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
torch.set_num_threads(2)


# =============================================================== torch builders
def bn(c: int, eps: float = 1e-5) -> nn.Module:
    return nn.BatchNorm2d(c, eps=eps)


def conv_bn(cin: int, c: int, k: int = 1, stride: int = 1, eps: float = 1e-5) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, c, k, stride, k // 2, bias=False), bn(c, eps))


def conv_bn_relu(cin: int, c: int, k: int = 3, stride: int = 1, eps: float = 1e-5) -> nn.Sequential:
    return nn.Sequential(*conv_bn(cin, c, k, stride, eps), nn.ReLU())


def centre_crop(x, like):
    h, w = like.shape[-2:]
    top, left = (x.shape[-2] - h) // 2, (x.shape[-1] - w) // 2
    return x[..., top:top + h, left:left + w]


class Residual(nn.Module):
    """relu(main(x) + skip(x)), skip = identity when None."""

    def __init__(self, main: nn.Module, skip: nn.Module | None, post_relu: bool = True):
        super().__init__()
        self.main, self.skip, self.post_relu = main, skip, post_relu

    def forward(self, x):
        y = self.main(x) + (self.skip(x) if self.skip is not None else x)
        return F.relu(y) if self.post_relu else y


def basic(cin: int, c: int, stride: int = 1) -> nn.Module:
    main = nn.Sequential(*conv_bn_relu(cin, c, 3, stride), *conv_bn(c, c, 3))
    skip = conv_bn(cin, c, 1, stride) if stride != 1 or cin != c else None
    return Residual(main, skip)


class SqueezeExcite(nn.Module):
    def __init__(self, c: int, r: int = 16):
        super().__init__()
        self.gate = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(c, c // r, 1), nn.ReLU(),
                                  nn.Conv2d(c // r, c, 1), nn.Sigmoid())

    def forward(self, x):
        return x * self.gate(x)


def bottleneck(cin: int, c: int, stride: int = 1, v1_5: bool = True, se: bool = False) -> nn.Module:
    main = nn.Sequential(*conv_bn_relu(cin, c, 1, 1 if v1_5 else stride),
                         *conv_bn_relu(c, c, 3, stride if v1_5 else 1),
                         *conv_bn(c, 4 * c, 1), *([SqueezeExcite(4 * c)] if se else []))
    skip = conv_bn(cin, 4 * c, 1, stride) if stride != 1 or cin != 4 * c else None
    return Residual(main, skip)


def resnet(layers, block: str = "basic", width: int = 64, classes: int = 1000, v1_5: bool = True,
           se: bool = False, head: bool = True) -> nn.Sequential:
    mods = [*conv_bn_relu(3, width, 7, 2), nn.MaxPool2d(3, 2, 1)]
    cin = width
    for i, n in enumerate(layers):
        c = width * 2 ** i
        for j in range(n):
            stride = 2 if i > 0 and j == 0 else 1
            if block == "basic":
                mods.append(basic(cin, c, stride))
                cin = c
            else:
                mods.append(bottleneck(cin, c, stride, v1_5, se))
                cin = 4 * c
    if head:
        mods += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, classes)]
    return nn.Sequential(*mods)


def cifar_resnet(cin: int, widths, n: int, classes: int = 10) -> nn.Sequential:
    mods = [*conv_bn_relu(cin, widths[0], 3)]
    c_prev = widths[0]
    for i, c in enumerate(widths):
        for j in range(n):
            mods.append(basic(c_prev, c, 2 if i > 0 and j == 0 else 1))
            c_prev = c
    return nn.Sequential(*mods, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c_prev, classes))


class PreactBottleneck(nn.Module):
    def __init__(self, cin: int, c: int, stride: int = 1):
        super().__init__()
        self.pre = nn.Sequential(bn(cin), nn.ReLU())
        self.main = nn.Sequential(nn.Conv2d(cin, c, 1, bias=False), bn(c), nn.ReLU(),
                                  nn.Conv2d(c, c, 3, stride, 1, bias=False), bn(c), nn.ReLU(),
                                  nn.Conv2d(c, 4 * c, 1, bias=False))
        self.proj = nn.Conv2d(cin, 4 * c, 1, stride, bias=False) if stride != 1 or cin != 4 * c else None

    def forward(self, x):
        a = self.pre(x)
        return self.main(a) + (self.proj(a) if self.proj is not None else x)


def resnet1001(n: int = 111, classes: int = 10) -> nn.Sequential:
    mods, cin = [nn.Conv2d(3, 16, 3, 1, 1, bias=False)], 16
    for i, c in enumerate((16, 32, 64)):
        for j in range(n):
            mods.append(PreactBottleneck(cin, c, 2 if i > 0 and j == 0 else 1))
            cin = 4 * c
    return nn.Sequential(*mods, bn(cin), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, classes))


class Concat(nn.Module):
    def __init__(self, *branches: nn.Module, keep_input: bool = False):
        super().__init__()
        self.branches, self.keep_input = nn.ModuleList(branches), keep_input

    def forward(self, x):
        return torch.cat(([x] if self.keep_input else []) + [b(x) for b in self.branches], 1)


def inception(cin, c1, c3r, c3, c5r, c5, pool_proj, k5=5, batchnorm=False) -> nn.Module:
    """The brief's inception block (conv + relu), or torchvision's (conv + bn(eps 0.001) + relu, ceil pools)."""
    def unit(i, o, k=1):
        if batchnorm:
            return conv_bn_relu(i, o, k, eps=0.001)
        return nn.Sequential(nn.Conv2d(i, o, k, padding=k // 2), nn.ReLU())
    return Concat(unit(cin, c1),
                  nn.Sequential(unit(cin, c3r), unit(c3r, c3, 3)),
                  nn.Sequential(unit(cin, c5r), unit(c5r, c5, k5)),
                  nn.Sequential(nn.MaxPool2d(3, 1, 1, ceil_mode=batchnorm), unit(cin, pool_proj)))


GOOGLENET_CFG = [  # torchvision's GoogLeNet: (in, c1, c3r, c3, c5r, c5, pool_proj), "M" = maxpool
    (192, 64, 96, 128, 16, 32, 32), (256, 128, 128, 192, 32, 96, 64), "M3",
    (480, 192, 96, 208, 16, 48, 64), (512, 160, 112, 224, 24, 64, 64), (512, 128, 128, 256, 24, 64, 64),
    (512, 112, 144, 288, 32, 64, 64), (528, 256, 160, 320, 32, 128, 128), "M2",
    (832, 256, 160, 320, 32, 128, 128), (832, 384, 192, 384, 48, 128, 128)]


def googlenet(classes: int = 1000, upto: int | None = None) -> nn.Sequential:
    mods = [*conv_bn_relu(3, 64, 7, 2, eps=0.001), nn.MaxPool2d(3, 2, ceil_mode=True),
            *conv_bn_relu(64, 64, 1, eps=0.001), *conv_bn_relu(64, 192, 3, eps=0.001),
            nn.MaxPool2d(3, 2, ceil_mode=True)]
    for i, cfg in enumerate(GOOGLENET_CFG[:upto]):
        if cfg == "M3":
            mods.append(nn.MaxPool2d(3, 2, ceil_mode=True))
        elif cfg == "M2":
            mods.append(nn.MaxPool2d(2, 2, ceil_mode=True))
        else:
            mods.append(inception(*cfg, k5=3, batchnorm=True))
    if upto is None:
        mods += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2), nn.Linear(1024, classes)]
    return nn.Sequential(*mods)


def small_inception() -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         inception(16, 8, 8, 16, 4, 8, 8), inception(40, 16, 12, 24, 4, 8, 8), nn.MaxPool2d(2),
                         inception(56, 24, 16, 32, 8, 16, 16),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(88, 10))


def densenet121(growth: int = 32, blocks=(6, 12, 24, 16), classes: int = 1000) -> nn.Sequential:
    mods = [*conv_bn_relu(3, 2 * growth, 7, 2), nn.MaxPool2d(3, 2, 1)]
    c = 2 * growth
    for i, n in enumerate(blocks):
        for _ in range(n):
            mods.append(Concat(nn.Sequential(bn(c), nn.ReLU(), nn.Conv2d(c, 4 * growth, 1, bias=False),
                                             bn(4 * growth), nn.ReLU(),
                                             nn.Conv2d(4 * growth, growth, 3, padding=1, bias=False)),
                               keep_input=True))
            c += growth
        if i < len(blocks) - 1:
            mods += [bn(c), nn.ReLU(), nn.Conv2d(c, c // 2, 1, bias=False), nn.AvgPool2d(2)]
            c //= 2
    return nn.Sequential(*mods, bn(c), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, classes))


MOBILENET_CFG = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), *[(512, 1)] * 5, (1024, 2), (1024, 1)]


def mobilenet_v1(classes: int = 1000, blocks: int | None = None, shrink: int = 1) -> nn.Sequential:
    """MobileNet v1; `blocks` keeps only the first separable blocks, `shrink` divides every width."""
    mods, cin = [*conv_bn_relu(3, 32 // shrink, 3, 2)], 32 // shrink
    for c, s in MOBILENET_CFG[:blocks]:
        c //= shrink
        mods += [nn.Conv2d(cin, cin, 3, s, 1, groups=cin, bias=False), bn(cin), nn.ReLU(), *conv_bn_relu(cin, c, 1)]
        cin = c
    if blocks is None:
        mods += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, classes)]
    return nn.Sequential(*mods)


def vgg_features(cfg, cin: int = 3, ceil_mode: bool = False, first_pad: int = 1) -> list:
    mods = []
    for v in cfg:
        if v == "M":
            mods.append(nn.MaxPool2d(2, 2, ceil_mode=ceil_mode))
        else:
            mods += [nn.Conv2d(cin, v, 3, padding=first_pad if not mods else 1), nn.ReLU()]
            cin = v
    return mods


VGG16 = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]


def vgg16(classes: int = 1000) -> nn.Sequential:
    return nn.Sequential(*vgg_features(VGG16), nn.AdaptiveAvgPool2d(7), nn.Flatten(),
                         nn.Linear(25088, 4096), nn.ReLU(), nn.Dropout(), nn.Linear(4096, 4096), nn.ReLU(),
                         nn.Dropout(), nn.Linear(4096, classes))


def alexnet(classes: int = 1000) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 64, 11, 4, 2), nn.ReLU(), nn.MaxPool2d(3, 2),
        nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
        nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(), nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(),
        nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(), nn.MaxPool2d(3, 2),
        nn.AdaptiveAvgPool2d((6, 6)), nn.Flatten(), nn.Dropout(), nn.Linear(9216, 4096), nn.ReLU(),
        nn.Dropout(), nn.Linear(4096, 4096), nn.ReLU(), nn.Linear(4096, classes))


def alexnet_lrn(classes: int = 1000) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 96, 11, 4), nn.ReLU(), nn.LocalResponseNorm(5, k=2.0), nn.MaxPool2d(3, 2),
        nn.Conv2d(96, 256, 5, padding=2, groups=2), nn.ReLU(), nn.LocalResponseNorm(5, k=2.0), nn.MaxPool2d(3, 2),
        nn.Conv2d(256, 384, 3, padding=1), nn.ReLU(), nn.Conv2d(384, 384, 3, padding=1, groups=2), nn.ReLU(),
        nn.Conv2d(384, 256, 3, padding=1, groups=2), nn.ReLU(), nn.MaxPool2d(3, 2), nn.Flatten(),
        nn.Linear(9216, 4096), nn.ReLU(), nn.Dropout(), nn.Linear(4096, 4096), nn.ReLU(), nn.Dropout(),
        nn.Linear(4096, classes))


def lenet5() -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(1, 6, 5, padding=2), nn.Sigmoid(), nn.AvgPool2d(2, 2),
                         nn.Conv2d(6, 16, 5), nn.Sigmoid(), nn.AvgPool2d(2, 2), nn.Flatten(),
                         nn.Linear(400, 120), nn.Sigmoid(), nn.Linear(120, 84), nn.Sigmoid(), nn.Linear(84, 10))


class FCN32s(nn.Module):
    def __init__(self, classes: int = 21):
        super().__init__()
        self.features = nn.Sequential(*vgg_features(VGG16, ceil_mode=True, first_pad=100))
        self.head = nn.Sequential(nn.Conv2d(512, 4096, 7), nn.ReLU(), nn.Dropout(),
                                  nn.Conv2d(4096, 4096, 1), nn.ReLU(), nn.Dropout(), nn.Conv2d(4096, classes, 1),
                                  nn.ConvTranspose2d(classes, classes, 64, stride=32, bias=False))

    def forward(self, x):
        return centre_crop(self.head(self.features(x)), x)


def double_conv(cin: int, c: int, pad: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, c, 3, padding=pad), nn.ReLU(), nn.Conv2d(c, c, 3, padding=pad), nn.ReLU())


class UNet(nn.Module):
    """unet.cnn (pad = 1), unet_paper.cnn (pad = 0, copy and crop) and small_unet.cnn (widths (16, 32, 64))."""

    def __init__(self, widths=(64, 128, 256, 512, 1024), classes: int = 2, pad: int = 1):
        super().__init__()
        cin, self.down = 1, nn.ModuleList()
        for c in widths:
            self.down.append(double_conv(cin, c, pad))
            cin = c
        self.pool = nn.MaxPool2d(2)
        self.ups, self.convs = nn.ModuleList(), nn.ModuleList()
        for c in reversed(widths[:-1]):
            self.ups.append(nn.ConvTranspose2d(cin, c, 2, stride=2))
            self.convs.append(double_conv(2 * c, c, pad))
            cin = c
        self.out = nn.Conv2d(cin, classes, 1)

    def forward(self, x):
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else self.pool(x))
            skips.append(x)
        skips.pop()
        for up, conv in zip(self.ups, self.convs):
            u = up(x)
            x = conv(torch.cat([centre_crop(skips.pop(), u), u], 1))
        return self.out(x)


def cbr(cin: int, c: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, c, 3, padding=1), bn(c), nn.ReLU())


class SegNet(nn.Module):
    ENC = [(3, 64, 2), (64, 128, 2), (128, 256, 3), (256, 512, 3), (512, 512, 3)]
    DEC = [(512, 3, 512), (512, 3, 256), (256, 3, 128), (128, 2, 64)]

    def __init__(self, classes: int = 12):
        super().__init__()
        self.enc = nn.ModuleList(nn.Sequential(cbr(cin, c), *[cbr(c, c) for _ in range(n - 1)])
                                 for cin, c, n in self.ENC)
        self.pools = nn.ModuleList(nn.MaxPool2d(2, 2, return_indices=True) for _ in self.ENC)
        self.unpools = nn.ModuleList(nn.MaxUnpool2d(2, 2) for _ in self.ENC)
        self.dec = nn.ModuleList(nn.Sequential(*[cbr(c, c) for _ in range(n - 1)], cbr(c, out))
                                 for c, n, out in self.DEC)
        self.last = nn.Sequential(cbr(64, 64), nn.Conv2d(64, classes, 3, padding=1))

    def forward(self, x):
        saved = []
        for enc, pool in zip(self.enc, self.pools):
            x = enc(x)
            size = x.shape[-2:]
            x, idx = pool(x)
            saved.append((idx, size))
        for i, dec in enumerate(list(self.dec) + [self.last]):
            idx, size = saved.pop()
            x = dec(self.unpools[i](x, idx, output_size=size))
        return x


class DeepLab(nn.Module):
    def __init__(self, classes: int = 21, c: int = 256):
        super().__init__()
        def conv_relu(i, o, d=1):
            return [nn.Conv2d(i, o, 3, padding=d, dilation=d), nn.ReLU()]
        mods, cin = [], 3
        for o, n, pool_stride, d in ((64, 2, 2, 1), (128, 2, 2, 1), (256, 3, 2, 1), (512, 3, 1, 1), (512, 3, 1, 2)):
            for _ in range(n):
                mods += conv_relu(cin, o, d)
                cin = o
            mods.append(nn.MaxPool2d(3, pool_stride, 1))
        self.backbone = nn.Sequential(*mods)
        self.aspp = aspp(512, c)
        self.head = nn.Sequential(nn.Conv2d(c, classes, 1), nn.Upsample(scale_factor=8, mode="bilinear"))

    def forward(self, x):
        return centre_crop(self.head(self.aspp(self.backbone(x))), x)


def aspp(cin: int, c: int) -> nn.Sequential:
    def atrous(rate):
        return nn.Sequential(nn.Conv2d(cin, c, 3, padding=rate, dilation=rate, bias=False), bn(c), nn.ReLU())
    return nn.Sequential(Concat(conv_bn_relu(cin, c, 1), atrous(6), atrous(12), atrous(18)),
                         *conv_bn_relu(4 * c, c, 1))


# ------------------------------------ MobileNetV3, EfficientNet, DeepLabV3 (issue 11, part A)
def make_divisible(v: float, divisor: int = 8) -> int:
    """torchvision's _make_divisible."""
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


class ResizeLike(nn.Module):
    """F.interpolate(x, size=like's H and W), as torchvision's DeepLabV3 resizes."""

    def forward(self, x, like):
        return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=False)


class SqueezeExcitation(nn.Module):
    """torchvision.ops.SqueezeExcitation."""

    def __init__(self, c: int, squeeze: int, act: type, gate: type):
        super().__init__()
        self.gate = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(c, squeeze, 1), act(), nn.Conv2d(squeeze, c, 1),
                                  gate())

    def forward(self, x):
        return x * self.gate(x)


class InvertedResidual(nn.Module):
    """MobileNetV3's bneck and EfficientNet's MBConv: expand, depthwise, squeeze-excite, project."""

    def __init__(self, cin: int, k: int, wide: int, out: int, stride: int, act: type, se: SqueezeExcitation | None,
                 eps: float = 1e-5):
        super().__init__()
        def cba(i, o, k=1, s=1, g=1, a=True):
            return [nn.Conv2d(i, o, k, s, (k - 1) // 2, groups=g, bias=False), bn(o, eps), *([act()] if a else [])]
        layers = cba(cin, wide) if wide != cin else []
        layers += cba(wide, wide, k, stride, wide) + ([se] if se is not None else []) + cba(wide, out, a=False)
        self.block, self.residual = nn.Sequential(*layers), stride == 1 and cin == out

    def forward(self, x):
        return self.block(x) + x if self.residual else self.block(x)


def mobilenet_v3_large(classes: int = 1000) -> nn.Sequential:
    setting = [(3, 16, 16, False, False, 1), (3, 64, 24, False, False, 2), (3, 72, 24, False, False, 1),
               (5, 72, 40, True, False, 2), (5, 120, 40, True, False, 1), (5, 120, 40, True, False, 1),
               (3, 240, 80, False, True, 2), (3, 200, 80, False, True, 1), (3, 184, 80, False, True, 1),
               (3, 184, 80, False, True, 1), (3, 480, 112, True, True, 1), (3, 672, 112, True, True, 1),
               (5, 672, 160, True, True, 2), (5, 960, 160, True, True, 1), (5, 960, 160, True, True, 1)]
    mods, cin = [nn.Conv2d(3, 16, 3, 2, 1, bias=False), bn(16, 0.001), nn.Hardswish()], 16
    for k, wide, out, se, hs, stride in setting:
        gate = SqueezeExcitation(wide, make_divisible(wide // 4), nn.ReLU, nn.Hardsigmoid) if se else None
        mods.append(InvertedResidual(cin, k, wide, out, stride, nn.Hardswish if hs else nn.ReLU, gate, 0.001))
        cin = out
    return nn.Sequential(*mods, nn.Conv2d(cin, 960, 1, bias=False), bn(960, 0.001), nn.Hardswish(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(960, 1280), nn.Hardswish(),
                         nn.Dropout(0.2), nn.Linear(1280, classes))


# (width, depth, resolution) of EfficientNet-B0 ... B7 (torchvision; B2 at the paper's 260) and the
# parameter counts of torchvision's docs.
EFFICIENTNETS = [(1.0, 1.0, 224, 5_288_548), (1.0, 1.1, 240, 7_794_184), (1.1, 1.2, 260, 9_109_994),
                 (1.2, 1.4, 300, 12_233_232), (1.4, 1.8, 380, 19_341_616), (1.6, 2.2, 456, 30_389_784),
                 (1.8, 2.6, 528, 43_040_704), (2.0, 3.1, 600, 66_347_960)]


def efficientnet(width: float, depth: float, classes: int = 1000) -> nn.Sequential:
    setting = [(1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3), (6, 5, 1, 112, 3),
               (6, 5, 2, 192, 4), (6, 3, 1, 320, 1)]
    cin = make_divisible(32 * width)
    mods = [nn.Conv2d(3, cin, 3, 2, 1, bias=False), bn(cin), nn.SiLU()]
    for expand, k, stride, c, n in setting:
        out = make_divisible(c * width)
        for j in range(int(math.ceil(n * depth))):
            wide = make_divisible(cin * expand)
            se = SqueezeExcitation(wide, max(1, cin // 4), nn.SiLU, nn.Sigmoid)
            mods.append(InvertedResidual(cin, k, wide, out, stride if j == 0 else 1, nn.SiLU, se))
            cin = out
    return nn.Sequential(*mods, nn.Conv2d(cin, 4 * cin, 1, bias=False), bn(4 * cin), nn.SiLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2), nn.Linear(4 * cin, classes))


class DilatedBottleneck(nn.Module):
    def __init__(self, cin: int, c: int, stride: int, dilation: int):
        super().__init__()
        self.main = nn.Sequential(nn.Conv2d(cin, c, 1, bias=False), bn(c), nn.ReLU(),
                                  nn.Conv2d(c, c, 3, stride, dilation, dilation, bias=False), bn(c), nn.ReLU(),
                                  nn.Conv2d(c, 4 * c, 1, bias=False), bn(4 * c))
        self.skip = conv_bn(cin, 4 * c, 1, stride) if stride != 1 or cin != 4 * c else None

    def forward(self, x):
        return F.relu(self.main(x) + (self.skip(x) if self.skip is not None else x))


class ASPPPooling(nn.Module):
    def __init__(self, cin: int, c: int):
        super().__init__()
        self.gate, self.resize = nn.Sequential(nn.AdaptiveAvgPool2d(1), *conv_bn_relu(cin, c, 1)), ResizeLike()

    def forward(self, x):
        return self.resize(self.gate(x), x)


class DeepLabV3(nn.Module):
    """torchvision's deeplabv3_resnet50 without the auxiliary head (aux_loss=False)."""

    def __init__(self, classes: int = 21, c: int = 256):
        super().__init__()
        mods, cin = [*conv_bn_relu(3, 64, 7, 2), nn.MaxPool2d(3, 2, 1)], 64
        for width, n, stride, dilation, first in ((64, 3, 1, 1, 1), (128, 4, 2, 1, 1), (256, 6, 1, 2, 1),
                                                  (512, 3, 1, 4, 2)):
            for j in range(n):
                mods.append(DilatedBottleneck(cin, width, stride if j == 0 else 1, first if j == 0 else dilation))
                cin = 4 * width
        self.backbone = nn.Sequential(*mods)

        def atrous(rate):
            return nn.Sequential(nn.Conv2d(cin, c, 3, padding=rate, dilation=rate, bias=False), bn(c), nn.ReLU())
        self.aspp = nn.Sequential(Concat(conv_bn_relu(cin, c, 1), atrous(12), atrous(24), atrous(36),
                                         ASPPPooling(cin, c)), *conv_bn_relu(5 * c, c, 1), nn.Dropout(0.5))
        self.head = nn.Sequential(*conv_bn_relu(c, c, 3), nn.Conv2d(c, classes, 1))
        self.resize = ResizeLike()

    def forward(self, x):
        return self.resize(self.head(self.aspp(self.backbone(x))), x)


# ================================================================== profiling
def _kind(m: nn.Module) -> str | None:
    if isinstance(m, ResizeLike):
        return "upsample"
    if isinstance(m, nn.AdaptiveAvgPool2d):
        size = m.output_size if isinstance(m.output_size, tuple) else (m.output_size,) * 2
        return "global_avgpool" if tuple(size) == (1, 1) else "adaptive_avgpool"
    return {nn.Conv2d: "conv", nn.ConvTranspose2d: "deconv", nn.Linear: "linear", nn.MaxPool2d: "maxpool",
            nn.AvgPool2d: "avgpool", nn.BatchNorm2d: "batchnorm", nn.MaxUnpool2d: "unpool",
            nn.Upsample: "upsample", nn.LocalResponseNorm: "lrn"}.get(type(m))


TRACKED = {"conv", "deconv", "linear", "maxpool", "avgpool", "global_avgpool", "adaptive_avgpool", "batchnorm",
           "unpool", "upsample", "lrn"}


def _macs(m: nn.Module, inp, out) -> int:
    if isinstance(m, nn.Conv2d):
        kh, kw = m.kernel_size
        return out[0].numel() * (m.in_channels // m.groups) * kh * kw
    if isinstance(m, nn.ConvTranspose2d):
        kh, kw = m.kernel_size
        return inp[0][0].numel() * (m.out_channels // m.groups) * kh * kw
    if isinstance(m, nn.Linear):
        return m.in_features * m.out_features
    return 0


def torch_profile(build, shape: tuple, device: str = "meta") -> dict:
    """Build the twin on `device`, run one zero sample through it, record layers, params, MACs, output shapes."""
    with torch.device(device):
        model = build().eval()
        x = torch.zeros(1, *shape)
    layers, macs = [], 0

    def hook(m, inp, out):
        nonlocal macs
        out = out[0] if isinstance(out, tuple) else out
        n = _macs(m, inp, out)
        macs += n
        layers.append((_kind(m), tuple(out.shape[1:]), sum(p.numel() for p in m.parameters(recurse=False)), n))

    for m in model.modules():
        if _kind(m) is not None:
            m.register_forward_hook(hook)
    with torch.no_grad():
        y = model(x)
    outs = y if isinstance(y, (tuple, list)) else (y,)
    return {"params": sum(p.numel() for p in model.parameters()), "macs": macs, "layers": layers,
            "outputs": [tuple(o.shape[1:]) for o in outs]}


def cnnc_profile(c) -> dict:
    a = c.analysis
    layers = [(n.op, tuple(c.net.shapes[n.name]), a.layer_params[n.name], a.macs[n.name])
              for n in c.net.layers() if n.op in TRACKED]
    t = a.totals()
    return {"params": t["params"], "macs": t["macs"], "layers": layers,
            "outputs": [tuple(c.net.shapes[o]) for o in c.net.outputs]}


def assert_same(ours: dict, theirs: dict) -> None:
    mine, ref = Counter(ours["layers"]), Counter(theirs["layers"])
    missing, extra = ref - mine, mine - ref
    assert not missing and not extra, (f"layers only in torch: {sorted(missing.items())[:8]}; "
                                       f"only in cnnc: {sorted(extra.items())[:8]}")
    assert ours["outputs"] == theirs["outputs"]
    assert ours["params"] == theirs["params"]
    assert ours["macs"] == theirs["macs"]


# (id, file, network args, input binding or None, torch builder, input shape, device)
TWINS = [
    ("lenet5", "lenet5.cnn", {}, None, lenet5, (1, 28, 28), "cpu"),
    ("alexnet", "alexnet.cnn", {}, None, alexnet, (3, 224, 224), "meta"),
    ("alexnet_lrn", "alexnet_lrn.cnn", {}, None, alexnet_lrn, (3, 227, 227), "meta"),
    ("vgg16", "vgg16.cnn", {}, None, vgg16, (3, 224, 224), "meta"),
    ("resnet18", "resnet18.cnn", {}, None, lambda: resnet([2, 2, 2, 2]), (3, 224, 224), "cpu"),
    ("resnet50", "resnet50.cnn", {}, None, lambda: resnet([3, 4, 6, 3], "bottleneck"), (3, 224, 224), "meta"),
    ("resnet50_v1", "resnet50.cnn", {"v1_5": False}, None,
     lambda: resnet([3, 4, 6, 3], "bottleneck", v1_5=False), (3, 224, 224), "meta"),
    ("resnet152", "resnet152.cnn", {}, None, lambda: resnet([3, 8, 36, 3], "bottleneck"), (3, 224, 224), "meta"),
    ("se_resnet50", "se_resnet.cnn", {}, None, lambda: resnet([3, 4, 6, 3], "bottleneck", se=True),
     (3, 224, 224), "meta"),
    ("resnet1001", "resnet1001.cnn", {}, None, resnet1001, (3, 32, 32), "meta"),
    ("cifar_resnet20", "cifar_resnet20.cnn", {}, None, lambda: cifar_resnet(3, (16, 32, 64), 3), (3, 32, 32), "cpu"),
    ("small_resnet", "small_resnet.cnn", {}, None,
     lambda: nn.Sequential(*conv_bn_relu(1, 16), basic(16, 16), basic(16, 32, 2), basic(32, 64, 2),
                           nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10)), (1, 28, 28), "cpu"),
    ("googlenet", "googlenet.cnn", {}, None, googlenet, (3, 224, 224), "meta"),
    ("inception_block", "inception_block.cnn", {}, None, lambda: inception(192, 64, 96, 128, 16, 32, 32),
     (192, 28, 28), "cpu"),
    ("small_inception", "small_inception.cnn", {}, None, small_inception, (1, 28, 28), "cpu"),
    ("densenet121", "densenet121.cnn", {}, None, densenet121, (3, 224, 224), "meta"),
    ("mobilenet_v1", "mobilenet_v1.cnn", {}, None, mobilenet_v1, (3, 224, 224), "cpu"),
    ("unet_64", "unet.cnn", {}, (1, 64, 64), UNet, (1, 64, 64), "cpu"),
    ("unet_paper_572", "unet_paper.cnn", {}, (1, 572, 572), lambda: UNet(pad=0), (1, 572, 572), "meta"),
    ("unet_paper_570", "unet_paper.cnn", {}, (1, 570, 570), lambda: UNet(pad=0), (1, 570, 570), "meta"),
    ("small_unet", "small_unet.cnn", {}, None, lambda: UNet((16, 32, 64)), (1, 32, 32), "cpu"),
    ("segnet_64", "segnet.cnn", {}, (3, 64, 64), SegNet, (3, 64, 64), "cpu"),
    ("segnet_odd", "segnet.cnn", {}, (3, 45, 37), SegNet, (3, 45, 37), "meta"),
    ("segnet_camvid", "segnet.cnn", {}, (3, 360, 480), SegNet, (3, 360, 480), "meta"),
    ("fcn32s_224", "fcn32s.cnn", {}, (3, 224, 224), FCN32s, (3, 224, 224), "meta"),
    ("fcn32s_500", "fcn32s.cnn", {}, (3, 500, 500), FCN32s, (3, 500, 500), "meta"),
    ("deeplab_64", "deeplab.cnn", {}, (3, 64, 64), DeepLab, (3, 64, 64), "cpu"),
    ("deeplab_odd", "deeplab.cnn", {}, (3, 45, 37), DeepLab, (3, 45, 37), "meta"),
]


@pytest.mark.parametrize("name, file, args, bind, build, shape, device", TWINS, ids=[t[0] for t in TWINS])
def test_matches_torch_twin(name, file, args, bind, build, shape, device):
    inputs = {"x": bind} if bind is not None else None
    c = compile_file(EXAMPLES / file, inputs=inputs, args=args or None)
    assert_same(cnnc_profile(c), torch_profile(build, shape, device))


def test_deeplab_aspp_block_matches_torch(tmp_path):
    """The ASPP head of deeplab.cnn alone (dilations 6, 12, 18 + 1x1, concat, projection) on a small map."""
    src = tmp_path / "aspp.cnn"
    src.write_text(f'import "{EXAMPLES / "deeplab.cnn"}"\n'
                   "network ASPP { input f: [64, 33, 29]\n f -> aspp(32) }\n")
    c = compile_file(src)
    assert_same(cnnc_profile(c), torch_profile(lambda: aspp(64, 32), (64, 33, 29), "cpu"))
    assert c.net.shapes[c.net.outputs[0]] == (32, 33, 29)


# ============================================================ receptive fields
def _positive(model: nn.Module) -> nn.Module:
    """Every weight a positive constant, biases zero, max pooling -> average pooling of the same geometry."""
    for name, m in list(model.named_modules()):
        for child_name, child in list(m.named_children()):
            if isinstance(child, nn.MaxPool2d):
                setattr(m, child_name, nn.AvgPool2d(child.kernel_size, child.stride, child.padding,
                                                    ceil_mode=child.ceil_mode))
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            with torch.no_grad():
                m.weight.fill_(1.0 / m.weight[0].numel())
                if m.bias is not None:
                    m.bias.zero_()
    return model.eval()


def measured_field(build, shape: tuple) -> tuple:
    """(first, last) input row and column that the centre output unit depends on, and that unit's index."""
    model = _positive(build())
    x = torch.ones(1, *shape, requires_grad=True)
    y = model(x)
    i, j = y.shape[2] // 2, y.shape[3] // 2
    y[0, :, i, j].sum().backward()
    g = x.grad[0].abs().sum(0)
    rows = torch.nonzero(g.sum(1)).flatten()
    cols = torch.nonzero(g.sum(0)).flatten()
    assert rows.numel() and cols.numel()
    return (int(rows.min()), int(rows.max())), (int(cols.min()), int(cols.max())), (i, j), tuple(y.shape[2:])


def assert_field(field, build, shape: tuple, axes: tuple = (0, 1)) -> None:
    """Compiler's (size, stride, padding) per axis vs the measured extent of the centre unit's gradient."""
    rows, cols, (i, j), _ = measured_field(build, shape)
    for axis, ((lo, hi), f, unit, n) in enumerate(((rows, field[0], i, shape[1]), (cols, field[1], j, shape[2]))):
        if axis not in axes:
            continue
        start = unit * f.stride - f.padding
        assert 0 < start and start + f.size - 1 < n - 1, "choose a larger input: the field is clipped"
        assert (lo, hi - lo + 1) == (start, f.size), f"measured rows/cols {lo}..{hi}, compiler {f}"


def before_global_pool(c) -> str:
    return next(n for n in c.net.layers() if n.op == "global_avgpool").inputs[0]


CHAIN = """
network Chain {
    input x: [1, H, W]
    x -> conv(4, 3) -> relu -> maxpool(2) -> conv(4, 3, dilation = 2, pad = 2) -> relu
      -> conv(4, 5, stride = 2, pad = 1) -> avgpool(3, stride = 2, pad = 1) -> conv(2, (3, 1), pad = (1, 0))
}
"""


def test_receptive_field_of_a_chain(tmp_path):
    src = tmp_path / "chain.cnn"
    src.write_text(CHAIN)
    c = compile_file(src)
    last = c.net.outputs[0]
    f = c.analysis.rf[last]
    assert (f[0].size, f[1].size) == (44, 28)  # the last conv is 3 tall, 1 wide, at effective stride 8
    twin = lambda: nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.MaxPool2d(2),
                                 nn.Conv2d(4, 4, 3, dilation=2, padding=2), nn.ReLU(), nn.Conv2d(4, 4, 5, 2, 1),
                                 nn.AvgPool2d(3, 2, 1), nn.Conv2d(4, 2, (3, 1), padding=(1, 0)))
    assert_field(f, twin, (1, 80, 80))


def test_receptive_field_small_resnet():
    c = compile_file(EXAMPLES / "small_resnet.cnn")
    f = c.analysis.rf["basic_3.relu"]
    twin = lambda: nn.Sequential(*conv_bn_relu(1, 4), basic(4, 4), basic(4, 8, 2), basic(8, 8, 2))
    assert_field(f, twin, (1, 96, 96))


@pytest.mark.parametrize("file, args, published", [
    ("resnet18.cnn", {}, 435),                     # Araujo et al., Distill 2019 (resnet 18: 435)
    ("resnet50.cnn", {"v1_5": False}, 483),        # Distill 2019 table: resnet_v1_50 483, stride 32
    ("resnet50.cnn", {}, 427),                     # torchvision v1.5: the first 3x3 of stages 2-4 sees half the stride
])
def test_receptive_field_resnets(file, args, published):
    c = compile_file(EXAMPLES / file, args=args or None)
    f = c.analysis.rf[before_global_pool(c)]
    assert f[0].size == f[1].size == published and f[0].stride == 32
    if "18" in file:
        twin = lambda: resnet([2, 2, 2, 2], width=4, head=False)
    else:
        twin = lambda: resnet([3, 4, 6, 3], "bottleneck", width=2, v1_5=args.get("v1_5", True), head=False)
    assert f[0] == f[1]
    assert_field(f, twin, (3, 544, 64), axes=(0,))  # square fields: a narrow input and the rows suffice


def test_receptive_field_mobilenet_prefix():
    c = compile_file(EXAMPLES / "mobilenet_v1.cnn")
    f = c.analysis.rf["dw_separable_5.conv_bn_relu.relu"]
    assert f[0].size == 43 and f[0].stride == 8
    assert_field(f, lambda: mobilenet_v1(blocks=5, shrink=8), (3, 96, 96))


def test_receptive_field_googlenet_prefix():
    c = compile_file(EXAMPLES / "googlenet.cnn")
    f = c.analysis.rf["inception3b.concat"]
    assert_field(f, lambda: googlenet(upto=2), (3, 224, 224))


def test_receptive_field_aspp(tmp_path):
    src = tmp_path / "aspp_rf.cnn"
    src.write_text(f'import "{EXAMPLES / "deeplab.cnn"}"\n'
                   "network A { input x: [3, H, W]\n x -> maxpool(3, stride = 2, pad = 1) -> aspp(4) }\n")
    c = compile_file(src)
    f = c.analysis.rf[c.net.outputs[0]]
    assert f[0].size == 3 + 2 * 36 and f[0].stride == 2          # dilation 18: 37 taps at stride 2, after a 3-pool
    assert_field(f, lambda: nn.Sequential(nn.MaxPool2d(3, 2, 1), aspp(3, 4)), (3, 120, 120))


# The examples of issue 11, part A: each against a model written here from torchvision's source.
LANGUAGE_TWINS = [
    ("mobilenet_v3_large", "mobilenet_v3.cnn", {}, None, mobilenet_v3_large, (3, 224, 224), "meta"),
    *[(f"efficientnet_b{v}", "efficientnet.cnn", {"variant": v}, None, lambda w=w, d=d: efficientnet(w, d),
       (3, r, r), "meta") for v, (w, d, r, _) in enumerate(EFFICIENTNETS)],
    ("deeplabv3_520", "deeplabv3.cnn", {}, (3, 520, 520), DeepLabV3, (3, 520, 520), "meta"),
    ("deeplabv3_odd", "deeplabv3.cnn", {}, (3, 45, 37), DeepLabV3, (3, 45, 37), "cpu"),
]


@pytest.mark.parametrize("name, file, args, bind, build, shape, device", LANGUAGE_TWINS,
                         ids=[t[0] for t in LANGUAGE_TWINS])
def test_language_examples_match_torch_twin(name, file, args, bind, build, shape, device):
    test_matches_torch_twin(name, file, args, bind, build, shape, device)


@pytest.mark.parametrize("variant", range(8))
def test_efficientnet_twins_have_the_published_parameter_counts(variant):
    width, depth, _, published = EFFICIENTNETS[variant]
    assert sum(p.numel() for p in efficientnet(width, depth).parameters()) == published
