"""Models: parameter counts against torchvision and the papers, forward and backward for every
model config x dataset shape (composed through Hydra, so the interpolations are real), a short
training run per family, and residual vs plain."""

import hydra
import pytest
import torch
import torchvision
from torch import nn

from convbench.config.compose import config_dir
from convbench.models.alexnet import AlexNet
from convbench.models.googlenet import GoogLeNet
from convbench.models.resnet import ResNet
from convbench.models.vgg import VGG
from helpers.configs import NARROW, composed

MODEL_NAMES = sorted(path.stem for path in (config_dir() / "model").glob("*.yaml"))
DATASET_SHAPES = {
    "28x28x1": ["dataset=fashionmnist"],
    "32x32x3": ["dataset=cifar10"],
    "224x224x3": ["dataset=cifar10", "dataset.image_size=224"],
}
IMAGENET_SHAPED = ["dataset=cifar10", "dataset.image_size=224", "dataset.num_classes=1000"]
# Geometry, not width, is what breaks on a new input shape: narrow versions of the heavy configs
# keep the CPU forward/backward of 224x224 inputs short. Full widths are counted in the
# parameter tests (built on the meta device).
EXTRA_CASES = {
    "vgg11_bn": ["model=vgg", "model.batch_norm=true", *NARROW["vgg"]],
    "googlenet_paper": [
        *("model=googlenet", "model.batch_norm=false", "model.wide_kernel=5"),
        *NARROW["googlenet"],
    ],
    "resnet18": ["model=resnet", "model.depth=18", "model.width_multiplier=0.5"],
    "resnet50": ["model=resnet", "model.depth=50", "model.width_multiplier=0.25"],
    "plainnet18": ["model=plainnet", "model.depth=18", "model.width_multiplier=0.5"],
}
FORWARD_CASES = {name: [f"model={name}", *NARROW.get(name, [])] for name in MODEL_NAMES}
FORWARD_CASES.update(EXTRA_CASES)


def compose_config(overrides: list[str]):
    return composed(overrides)


def build(overrides: list[str]) -> nn.Module:
    return hydra.utils.instantiate(compose_config(overrides).model)


def count_parameters(model: nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


# torchvision model name -> our overrides; composed with IMAGENET_SHAPED.
TORCHVISION_TWINS = {
    **{
        f"resnet{depth}": ["model=resnet", f"model.depth={depth}"]
        for depth in (18, 34, 50, 101, 152)
    },
    **{f"vgg{depth}": ["model=vgg", f"model.depth={depth}"] for depth in (11, 13, 16, 19)},
    **{
        f"vgg{depth}_bn": ["model=vgg", f"model.depth={depth}", "model.batch_norm=true"]
        for depth in (11, 13, 16, 19)
    },
    "alexnet": ["model=alexnet"],
    "googlenet": ["model=googlenet"],
}


@pytest.mark.parametrize("torchvision_name", TORCHVISION_TWINS)
def test_imagenet_shaped_configs_have_torchvision_parameter_counts(torchvision_name):
    extra = {"aux_logits": False, "init_weights": False} if torchvision_name == "googlenet" else {}
    with torch.device("meta"):
        reference = getattr(torchvision.models, torchvision_name)(**extra)
        ours = build([*TORCHVISION_TWINS[torchvision_name], *IMAGENET_SHAPED])
    assert count_parameters(ours) == count_parameters(reference)


def test_googlenet_aux_heads_have_torchvision_parameter_count():
    with torch.device("meta"):
        reference = torchvision.models.googlenet(aux_logits=True, init_weights=False)
        ours = build(["model=googlenet", "model.aux_heads=true", *IMAGENET_SHAPED])
    assert count_parameters(ours) == count_parameters(reference)


@pytest.mark.parametrize("dataset", ["dataset=fashionmnist", "dataset=mnist"])
@pytest.mark.parametrize("image_size", [28, 32])
def test_lenet5_has_the_papers_61706_parameters(dataset, image_size):
    model = build(["model=lenet", dataset, f"dataset.image_size={image_size}"])
    assert count_parameters(model) == 61_706


def test_cifar_resnet20_has_the_papers_parameter_count():
    # He et al. 2016, Table 6: ResNet-20 has 0.27M parameters.
    assert count_parameters(build(["model=resnet", "model.depth=20", "dataset=cifar10"])) == 269_722


@pytest.mark.parametrize("shape", DATASET_SHAPES)
@pytest.mark.parametrize("case", FORWARD_CASES)
def test_forward_gives_logits_and_backward_reaches_every_parameter(case, shape):
    torch.manual_seed(0)
    cfg = compose_config([*FORWARD_CASES[case], *DATASET_SHAPES[shape]])
    model = hydra.utils.instantiate(cfg.model)
    side, channels = cfg.dataset.image_size, cfg.dataset.in_channels
    images = torch.randn(2, channels, side, side)
    logits = model(images)
    assert logits.shape == (2, cfg.dataset.num_classes)
    nn.functional.cross_entropy(logits, torch.tensor([0, 1])).backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(parameter.grad).all(), f"{name} has a non-finite gradient"


@pytest.mark.parametrize("shape", DATASET_SHAPES)
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_every_model_builds_on_the_meta_device(name, shape):
    # The summary command builds models like this: no real computation, no host syncs.
    with torch.device("meta"):
        model = build([f"model={name}", *DATASET_SHAPES[shape]])
    assert all(parameter.is_meta for parameter in model.parameters())


def test_googlenet_aux_heads_contract():
    model = build(
        ["model=googlenet", "model.aux_heads=true", "dataset=cifar10", *NARROW["googlenet"]]
    )
    images, labels = torch.randn(2, 3, 32, 32), torch.tensor([3, 7])
    logits = model(images)
    assert logits.shape == (2, 10)
    assert [aux.shape for aux in model.aux_outputs] == [(2, 10), (2, 10)]
    loss = nn.functional.cross_entropy(logits, labels)
    (loss + model.aux_loss(nn.functional.cross_entropy, labels)).backward()
    assert all(parameter.grad is not None for parameter in model.parameters())
    model.eval()
    assert model(images).shape == (2, 10)
    assert model.aux_outputs == ()
    assert model.aux_loss(nn.functional.cross_entropy, labels) == 0


def test_googlenet_without_aux_heads_stores_no_aux_outputs():
    model = build(["model=googlenet", "dataset=cifar10", *NARROW["googlenet"]])
    model(torch.randn(2, 3, 32, 32))
    assert model.aux_outputs == ()


# Narrow versions of each family, and steps enough for the slowest starter (AlexNet and VGG
# without batch norm sit on a plateau for a few steps), keep each run near a second on a CPU.
# No dropout: the same batch every step, so the losses compare without noise.
SMALL_HEAD = ["model.hidden=128", "model.dropout=0"]
TRAINING_CASES = {
    "alexnet": (["model=alexnet", "model.width_multiplier=0.25", *SMALL_HEAD], 25),
    "vgg": (["model=vgg", "model.depth=11", "model.width_multiplier=0.125", *SMALL_HEAD], 25),
    "googlenet": (["model=googlenet", "model.width_multiplier=0.125", "model.dropout=0"], 10),
    "resnet": (["model=resnet", "model.depth=20", "model.width_multiplier=0.5"], 10),
    "plainnet": (["model=plainnet", "model.depth=20", "model.width_multiplier=0.5"], 10),
}


def learnable_images(count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Noise around one fixed random 1x28x28 prototype per class, labels cycling through 10."""
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(count) % 10
    prototypes = torch.randn(10, 1, 28, 28, generator=generator)
    return torch.randn(count, 1, 28, 28, generator=generator) + prototypes[labels], labels


@pytest.mark.parametrize("case", TRAINING_CASES)
def test_a_few_adam_steps_lower_the_loss(case):
    overrides, steps = TRAINING_CASES[case]
    torch.manual_seed(0)
    model = build([*overrides, "dataset=fashionmnist"])
    images, labels = learnable_images(20)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(steps):
        loss = nn.functional.cross_entropy(model(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0], losses


@pytest.mark.parametrize("depth", [20, 56])
def test_cifar_plain_and_residual_nets_have_equal_parameter_counts(depth):
    # Option A shortcuts (zero padding) have no parameters, so only the skips differ.
    resnet = build(["model=resnet", f"model.depth={depth}", "dataset=cifar10"])
    plain = build(["model=plainnet", f"model.depth={depth}", "dataset=cifar10"])
    assert count_parameters(resnet) == count_parameters(plain)
    assert all(block.shortcut is not None for block in resnet.stages)
    assert all(block.shortcut is None for block in plain.stages)


@pytest.mark.parametrize("depth", [20, 50])
def test_zero_init_residual_starts_every_block_as_its_shortcut(depth):
    torch.manual_seed(0)
    options = ["model.zero_init_residual=true", "dataset=cifar10", "model.width_multiplier=0.25"]
    net = build(["model=resnet", f"model.depth={depth}", *options]).eval()
    with torch.no_grad():
        x = net.stem(torch.randn(2, 3, 32, 32))
        for block in net.stages:
            assert torch.equal(block(x), torch.relu(block.shortcut(x)))
            x = block(x)
    default = build(["model=resnet", f"model.depth={depth}", "dataset=cifar10"])
    last_scales = [[m for m in b.body if isinstance(m, nn.BatchNorm2d)][-1] for b in default.stages]
    assert all(bool((norm.weight == 1).all()) for norm in last_scales), "off by default"
    with pytest.raises(ValueError, match=r"needs model\.residual=true"):
        ResNet(10, 3, 32, residual=False, zero_init_residual=True)


def projection_parameters(pairs: list[tuple[int, int]]) -> int:
    """A 1x1 conv without bias plus a batch norm (weight and bias) per (in, out) shortcut."""
    return sum(cin * cout + 2 * cout for cin, cout in pairs)


@pytest.mark.parametrize(
    ("depth", "projections"),
    [
        (18, [(64, 128), (128, 256), (256, 512)]),
        (50, [(64, 256), (256, 512), (512, 1024), (1024, 2048)]),
    ],
    ids=["resnet18", "resnet50"],
)
def test_imagenet_plain_nets_lack_exactly_the_projection_shortcuts(depth, projections):
    overrides = [f"model.depth={depth}", *IMAGENET_SHAPED]
    with torch.device("meta"):
        resnet = build(["model=resnet", *overrides])
        plain = build(["model=plainnet", *overrides])
        option_a = build(["model=resnet", "model.shortcut=A", *overrides])
    difference = count_parameters(resnet) - count_parameters(plain)
    assert difference == projection_parameters(projections)
    assert count_parameters(option_a) == count_parameters(plain)


def test_auto_stem_follows_image_size():
    with torch.device("meta"):
        small = ResNet(10, 3, 32, depth=18)
        large = ResNet(10, 3, 224, depth=18)
    assert small.stem[0].kernel_size == (3, 3)
    assert not any(isinstance(layer, nn.MaxPool2d) for layer in small.stem)
    assert large.stem[0].kernel_size == (7, 7)
    assert isinstance(large.stem[-1], nn.MaxPool2d)


@pytest.mark.parametrize(
    "make",
    [
        lambda: ResNet(10, 3, 32, depth=19),
        lambda: ResNet(10, 3, 32, stem="tiny"),
        lambda: ResNet(10, 3, 32, shortcut="C"),
        lambda: VGG(10, 3, 32, depth=12),
        lambda: GoogLeNet(10, 3, 32, wide_kernel=7),
        lambda: AlexNet(10, 3, 32, stem="imagenet"),  # 11x11/4 + 3 pools: nothing left of 32x32
        lambda: AlexNet(10, 3, 32, pool_size=0),
    ],
    ids=[
        "resnet-depth",
        "stem",
        "shortcut",
        "vgg-depth",
        "wide-kernel",
        "alexnet-imagenet-stem-on-32",
        "pool-size",
    ],
)
def test_bad_model_options_raise_a_user_error(make):
    with torch.device("meta"), pytest.raises(ValueError):
        make()
