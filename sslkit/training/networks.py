"""Networks of the SSL runs: torchvision ResNet encoders, MLP projectors/predictors, small init.

Contract used by later stages (checkpoint analysis, eNTK, probes)::

    model = build_model(run_config)          # or sslkit.training.engine.load_checkpoint(path)[0]
    model.encoder(x)    # x: N x C x H x W float (normalised) -> N x h   (hidden representation)
    model.projector(h)  # N x h -> N x d                              (embedding)
    model.hidden(x)     # = model.encoder(x)
    model.embed(x)      # = model.projector(model.encoder(x))
    model.predictor     # N x d -> N x d; only methods registered with a predictor (BYOL family)
    model.target        # EMA copy (encoder + projector) for methods registered with ema=True, else absent

Which parts a method's model has comes from its registry declaration (``sslkit.training.methods``):
``predictor`` (None | "mlp" | "linear"), ``ema`` and ``projector`` (the MLP below, or the method's
own ``build_projector``).

Encoders are torchvision's ``ResNet`` (its ``BasicBlock``/``Bottleneck`` and ``_make_layer``, copied here
from torchvision 0.2x, BSD-3-Clause, so that a job does not import torchvision: ``import torchvision``
imports ``torch._dynamo``, ~2 s of every training and analysis job's start-up; the parameter names,
the initialisation and its random draws are torchvision's, tests/training/test_networks_optim.py
compares them), built with two options the paper's CPU-scale reproduction needs:

- ``small_stem``: conv1 is 3x3 stride 1 and there is no max-pool (the usual CIFAR stem for 32 px
  inputs); otherwise the ImageNet stem (7x7 stride 2 + max-pool) of the paper's STL-10 runs.
- ``width``: multiplies the channel counts 64-128-256-512 of the four stages (1.0 = torchvision's
  network exactly; 1/8 gives 8-16-32-64 channels for thin CPU ResNets). The hidden dimension h is
  512 x width for ResNet-18 and 2048 x width for ResNet-50. ``fc`` is removed (identity).

Small init (paper App. D.2): :func:`scale_init` multiplies *every* parameter of the encoder,
projector and predictor (conv/linear weights and biases, batch-norm affine weights) by ``alpha``
right after PyTorch's default initialisation; buffers (batch-norm running statistics) are not
touched. ``alpha = 1`` is the standard init.

MLP projectors follow each method's paper: ``hidden`` Linear layers each followed by BatchNorm1d
(optional) and ReLU, then a Linear layer to ``dim`` = d (Barlow Twins' last layer has no bias).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn

from sslkit.training.methods import METHODS

__all__ = [
    "ResNetEncoder",
    "build_encoder",
    "mlp",
    "SSLModel",
    "build_model",
    "scale_init",
]


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    """3x3 convolution with padding (torchvision's ``conv3x3`` with groups = dilation = 1)."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    """1x1 convolution (torchvision's ``conv1x1``)."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """torchvision's ``BasicBlock`` (groups 1, base width 64, no dilation): two 3x3 convolutions."""

    expansion: int = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


class Bottleneck(nn.Module):
    """torchvision's ``Bottleneck`` (ResNet V1.5: the stride sits on the 3x3 convolution)."""

    expansion: int = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = conv1x1(inplanes, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


_ARCHS = {
    "resnet18": (BasicBlock, [2, 2, 2, 2]),
    "resnet34": (BasicBlock, [3, 4, 6, 3]),
    "resnet50": (Bottleneck, [3, 4, 6, 3]),
}


class ResNetEncoder(nn.Module):
    """torchvision ResNet without the classifier, with a width multiplier and a small-image stem.

    Args:
        arch: ``resnet18`` | ``resnet34`` | ``resnet50``.
        width: channel multiplier of the four stages (1.0 = torchvision).
        small_stem: 3x3 stride-1 conv1 and no max-pool (for 32 px images and smaller).
        in_channels: image channels (3 for RGB, 1 for digits).

    ``forward``: N x in_channels x H x W -> N x out_dim (global average pool of the last stage).
    """

    def __init__(self, arch: str = "resnet18", width: float = 1.0, small_stem: bool = False,
                 in_channels: int = 3):
        if arch not in _ARCHS:
            raise ValueError(f"unknown encoder arch {arch!r}; expected one of {sorted(_ARCHS)}")
        if width <= 0:
            raise ValueError(f"encoder width must be > 0, got {width}")
        block, layers = _ARCHS[arch]
        super().__init__()
        norm = nn.BatchNorm2d
        widths = [max(1, int(round(c * width))) for c in (64, 128, 256, 512)]
        self.inplanes = widths[0]
        if small_stem:
            self.conv1 = nn.Conv2d(in_channels, widths[0], kernel_size=3, stride=1, padding=1, bias=False)
            self.maxpool = nn.Identity()
        else:
            self.conv1 = nn.Conv2d(in_channels, widths[0], kernel_size=7, stride=2, padding=3, bias=False)
            self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.bn1 = norm(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._make_layer(block, widths[0], layers[0])
        self.layer2 = self._make_layer(block, widths[1], layers[1], stride=2)
        self.layer3 = self._make_layer(block, widths[2], layers[2], stride=2)
        self.layer4 = self._make_layer(block, widths[3], layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Identity()
        self.out_dim = widths[3] * block.expansion
        # torchvision's initialisation (kaiming-normal convs, BN weight 1 / bias 0)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def _make_layer(self, block: type[BasicBlock | Bottleneck], planes: int, blocks: int,
                    stride: int = 1) -> nn.Sequential:
        """torchvision's ``ResNet._make_layer`` (no dilation): ``blocks`` blocks, the first with the stride."""
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(conv1x1(self.inplanes, planes * block.expansion, stride),
                                       nn.BatchNorm2d(planes * block.expansion))
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def build_encoder(arch: str = "resnet18", width: float = 1.0, small_stem: bool = False,
                  in_channels: int = 3) -> ResNetEncoder:
    return ResNetEncoder(arch, width, small_stem, in_channels)


def mlp(in_dim: int, hidden: Sequence[int], out_dim: int, batchnorm: bool = True,
        last_bias: bool = True) -> nn.Sequential:
    """``[Linear -> (BatchNorm1d) -> ReLU] * len(hidden) -> Linear(out_dim)``: N x in_dim -> N x out_dim."""
    layers: list[nn.Module] = []
    prev = in_dim
    for w in hidden:
        layers.append(nn.Linear(prev, w, bias=not batchnorm))
        if batchnorm:
            layers.append(nn.BatchNorm1d(w))
        layers.append(nn.ReLU(inplace=True))
        prev = w
    layers.append(nn.Linear(prev, out_dim, bias=last_bias))
    return nn.Sequential(*layers)


@torch.no_grad()
def scale_init(module: nn.Module, alpha: float) -> nn.Module:
    """Multiply every parameter of ``module`` by ``alpha`` in place (the paper's small init)."""
    if alpha != 1.0:
        for p in module.parameters():
            p.mul_(alpha)
    return module


class _Branch(nn.Module):
    """Encoder + projector (the EMA target of the BYOL family)."""

    def __init__(self, encoder: nn.Module, projector: nn.Module):
        super().__init__()
        self.encoder = encoder
        self.projector = projector

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projector(self.encoder(x))


class SSLModel(nn.Module):
    """The trained network of one run: ``encoder`` -> ``projector`` (-> ``predictor``).

    ``forward(x)`` = ``embed(x)``: N x C x H x W -> N x d. ``hidden(x)``: N x h.
    """

    def __init__(self, method: str, encoder: nn.Module, projector: nn.Module,
                 predictor: nn.Module | None = None, ema_target: bool = False):
        super().__init__()
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; expected one of {sorted(METHODS)}")
        self.method = method
        self.encoder = encoder
        self.projector = projector
        if predictor is not None:
            self.predictor = predictor
        if METHODS[method].spec.predictor == "linear":
            d = predictor.in_features
            # running correlation F_hat of the online embeddings (d x d) and whether it has data yet
            self.register_buffer("corr", torch.zeros(d, d))
            self.register_buffer("corr_initialized", torch.zeros((), dtype=torch.bool))
        if ema_target:
            self.target = _Branch(copy.deepcopy(encoder), copy.deepcopy(projector))
            for p in self.target.parameters():
                p.requires_grad_(False)

    def hidden(self, x: torch.Tensor) -> torch.Tensor:
        """N x C x H x W -> N x h (encoder output, before the projector)."""
        return self.encoder(x)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """N x C x H x W -> N x d (projector output, the embedding the loss sees)."""
        return self.projector(self.encoder(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.embed(x)

    def online_parameters(self):
        """Parameters the optimiser updates (everything but the EMA target and fixed predictors)."""
        skip = {id(p) for p in self.target.parameters()} if hasattr(self, "target") else set()
        return [p for p in self.parameters() if id(p) not in skip and p.requires_grad]


def build_model(run_config: dict) -> SSLModel:
    """The SSL model of a resolved run config (see ``sslkit.training.engine.resolve_run_config``).

    Uses ``run_config['encoder']`` (arch, width, small_stem), ``run_config['data']['channels']``,
    ``run_config['method_config']['projector']`` / ``['predictor']`` and ``run_config['init_scale']``;
    the method's registry declaration says which parts it has. Initialisation is drawn from torch's
    global RNG (seed it before calling for reproducibility).
    """
    method = run_config["method"]
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {sorted(METHODS)}")
    cls = METHODS[method]
    spec = cls.spec
    enc_cfg = run_config["encoder"]
    mcfg = run_config["method_config"]
    encoder = build_encoder(enc_cfg["arch"], enc_cfg["width"], enc_cfg["small_stem"],
                            run_config["data"]["channels"])
    pcfg = mcfg["projector"]
    projector = cls.build_projector(encoder.out_dim, pcfg)
    d = int(pcfg["dim"])
    predictor = None
    if spec.predictor == "mlp":
        if "predictor" not in mcfg:
            raise ValueError(f"methods.{method} has an MLP predictor: config key 'methods.{method}.predictor' "
                             f"(hidden, batchnorm) is missing")
        qcfg = mcfg["predictor"]
        predictor = mlp(d, qcfg["hidden"], d, qcfg["batchnorm"], True)
    elif spec.predictor == "linear":
        # linear d x d predictor, set from the running correlation F_hat (never trained)
        predictor = nn.Linear(d, d, bias=False)
        predictor.weight.requires_grad_(False)
    alpha = float(run_config["init_scale"])
    scale_init(encoder, alpha)
    scale_init(projector, alpha)
    if predictor is not None and spec.predictor == "mlp":
        scale_init(predictor, alpha)
    return SSLModel(method, encoder, projector, predictor, ema_target=spec.ema)
