"""`convbench summary`: hand-computed layer tables, the lecture's 480M-parameter MLP, the CLI."""

import json
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from typer.testing import CliRunner

from convbench.cli import app, main
from convbench.commands.summary import compose_config, summarize_config
from convbench.errors import EXIT_USER_ERROR
from convbench.models.anatomy import MAC_CONVENTION, _adaptive_window, summarize
from convbench.models.lenet import LeNet
from convbench.run.build import build_model

LECTURE_MLP = ["model=mlp", "model.hidden=[1000]", "dataset=cifar10", "dataset.image_size=400"]


def rows_by_name(summary: dict) -> dict[str, dict]:
    return {row["name"]: row for row in summary["layers"]}


def test_sequential_net_matches_hand_computation():
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(4, 8, 3),
        nn.Flatten(),
        nn.Linear(32, 10),
    )
    summary = summarize(net, (1, 1, 8, 8))
    got = [
        (r["output_shape"], r["params"], r["macs"], r["receptive_field"], r["jump"])
        for r in summary["layers"]
    ]
    assert got == [
        # conv 3x3, pad 1: 8x8 stays 8x8; params 4*1*3*3 + 4 = 40; MACs 4*8*8 outputs * 1*3*3 = 2304;
        # rf = 1 + (3-1)*1 = 3, jump = 1*1 = 1
        ([1, 4, 8, 8], 40, 2304, [3, 3], [1, 1]),
        # ReLU: nothing moves
        ([1, 4, 8, 8], 0, 0, [3, 3], [1, 1]),
        # max pool 2 (stride 2): 8x8 -> 4x4; rf = 3 + (2-1)*1 = 4, jump = 1*2 = 2
        ([1, 4, 4, 4], 0, 0, [4, 4], [2, 2]),
        # conv 3x3, no pad: 4x4 -> 2x2; params 8*4*3*3 + 8 = 296; MACs 8*2*2 * 4*3*3 = 1152;
        # rf = 4 + (3-1)*2 = 8, jump = 2
        ([1, 8, 2, 2], 296, 1152, [8, 8], [2, 2]),
        # flatten: 8*2*2 = 32 numbers, no spatial map left, so no rf
        ([1, 32], 0, 0, None, None),
        # linear: params 32*10 + 10 = 330; MACs 10 outputs * 32 inputs = 320
        ([1, 10], 330, 320, None, None),
    ]
    assert summary["params"] == summary["trainable_params"] == 40 + 296 + 330
    assert summary["macs"] == 2304 + 1152 + 320
    assert summary["param_bytes"] == 4 * 666  # float32
    assert [r["type"] for r in summary["layers"]][:3] == ["Conv2d", "ReLU", "MaxPool2d"]


def test_stride_dilation_and_rectangular_kernels():
    net = nn.Sequential(
        nn.Conv2d(1, 1, 3, stride=2),  # rf 1 + 2*1 = 3, jump 2
        nn.Conv2d(1, 1, 3, dilation=2),  # effective kernel 2*(3-1)+1 = 5: rf 3 + 4*2 = 11, jump 2
        nn.MaxPool2d(3, stride=1),  # rf 11 + 2*2 = 15, jump 2*1 = 2
        nn.Conv2d(1, 1, (3, 1)),  # height only: rf [15 + 2*2, 15] = [19, 15]
        # width only, stride = kernel: rf [19, 15 + 1*2] = [19, 17], jump [2, 2*2] = [2, 4]
        nn.AvgPool2d((1, 2)),
    )
    rows = summarize(net, (1, 1, 32, 32))["layers"]
    assert [r["receptive_field"] for r in rows] == [[3, 3], [11, 11], [15, 15], [19, 15], [19, 17]]
    assert [r["jump"] for r in rows] == [[2, 2], [2, 2], [2, 2], [2, 2], [2, 4]]
    # 32 -> 15 (stride 2) -> 11 (dilated) -> 9 (pool 3, stride 1) -> 7 rows -> 4 columns
    assert rows[-1]["output_shape"] == [1, 1, 7, 4]
    # dilated conv: 11*11 outputs * 1 channel * 3*3 taps
    assert rows[1]["macs"] == 11 * 11 * 9


class Branchy(nn.Module):
    """An Inception-style concat, a ResNet-style shortcut, functional pooling, global pooling."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 2, 3, padding=1)
        self.wide = nn.Conv2d(2, 2, 5, padding=2)
        self.narrow = nn.Conv2d(2, 2, 1)
        self.merge = nn.Conv2d(4, 4, 3, stride=2, padding=1)
        self.shortcut = nn.Conv2d(2, 4, 1, stride=2)
        self.head_pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        stem = self.stem(x)
        branches = torch.cat([self.wide(stem), self.narrow(stem)], dim=1)
        merged = self.merge(branches) + self.shortcut(stem)
        pooled = F.max_pool2d(merged, 2)  # functional: no module, no row, but it moves the rf
        return self.fc(torch.flatten(self.head_pool(pooled), 1))


def test_branches_merge_by_maximum_and_functional_pooling_counts():
    rows = rows_by_name(summarize(Branchy(), (1, 1, 16, 16)))
    geometry = {
        name: (row["receptive_field"][0], row["jump"][0])
        for name, row in rows.items()
        if row["receptive_field"] is not None
    }
    assert geometry == {
        "stem": (3, 1),  # 1 + 2*1
        "wide": (7, 1),  # 3 + 4*1
        "narrow": (3, 1),  # 1x1 on the stem: not the widest map seen so far
        "merge": (9, 2),  # input cat(wide, narrow) sees max(7, 3) = 7; 7 + 2*1, jump 1*2
        "shortcut": (3, 2),  # 1x1 stride 2 on the stem: 3 + 0, jump 2
        # merge + shortcut sees max(9, 3) = 9 at jump 2; F.max_pool2d(2): 9 + 1*2 = 11, jump 4
        # on an 8x8 -> 4x4 map; global pooling of 4x4 is a 4-window, stride 4: 11 + 3*4 = 23, jump 16
        "head_pool": (23, 16),
    }
    assert rows["head_pool"]["output_shape"] == [1, 4, 1, 1]
    assert rows["fc"]["macs"] == 12


def test_adaptive_pooling_windows():
    assert _adaptive_window(8, 1) == (8, 8)  # global pooling covers the whole map
    assert _adaptive_window(224 // 32, 7) == (1, 1)  # VGG's 7x7 pool on a 7x7 map: identity
    assert _adaptive_window(14, 7) == (2, 2)
    assert _adaptive_window(5, 3) == (3, 1)  # cells [0,2) [1,4) [3,5): widest 3
    assert _adaptive_window(1, 7) == (1, 1)  # upsampling: each cell copies one position


def test_real_cpu_model_keeps_its_modes_and_matches_the_meta_summary():
    model = LeNet(num_classes=10, in_channels=1, image_size=28)
    model.train()
    model.features[0].eval()
    summary = summarize(model, (1, 1, 28, 28))
    assert model.training and not model.features[0].training
    assert summary["params"] == sum(p.numel() for p in model.parameters()) == 61_706
    meta = summarize_config(["model=lenet", "dataset=fashionmnist"])
    assert meta["layers"] == summary["layers"]
    assert (meta["params"], meta["macs"]) == (summary["params"], summary["macs"])


def test_lenet_on_fashionmnist_from_the_config():
    summary = summarize_config(["model=lenet", "dataset=fashionmnist"])
    assert summary["params"] == 61_706  # LeCun et al. 1998, as the real model counts it above
    assert summary["input_shape"] == [1, 1, 28, 28]
    rows = rows_by_name(summary)
    # 28x28 padded to 32x32 (F.pad, no rf change). conv 5: rf 1 + 4*1 = 5, jump 1;
    # pool 2: 5 + 1*1 = 6, jump 2; conv 5: 6 + 4*2 = 14, jump 2; pool 2: 14 + 1*2 = 16, jump 4.
    assert rows["features.3"]["receptive_field"] == [14, 14]
    assert rows["features.5"]["receptive_field"] == [16, 16]
    assert rows["features.5"]["jump"] == [4, 4]
    assert rows["features.5"]["output_shape"] == [1, 16, 5, 5]
    # conv1: 6*28*28 outputs * 25 taps; conv2: 16*10*10 * 6*25; fc: 400*120 + 120*84 + 84*10
    assert summary["macs"] == 6 * 28 * 28 * 25 + 16 * 10 * 10 * 150 + 48_000 + 10_080 + 840


def test_lecture_mlp_has_480_million_parameters_on_the_meta_device():
    cfg, input_shape = compose_config(LECTURE_MLP)
    model = build_model(cfg, torch.device("meta"))
    assert all(p.is_meta for p in model.parameters())  # shapes only: no 1.9 GB allocated
    summary = summarize(model, input_shape)
    # 400*400*3 inputs * 1000 hidden + 1000 biases, then 1000*10 + 10
    assert summary["params"] == 400 * 400 * 3 * 1000 + 1000 + 1000 * 10 + 10 == 480_011_010
    assert summary["macs"] == 480_000_000 + 10_000
    assert summary["param_bytes"] == 4 * 480_011_010


def test_cli_json():
    result = CliRunner().invoke(app, ["summary", "--json", "model=mlp", "model.hidden=[64]"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert {"params", "trainable_params", "macs", "layers", "mac_convention"} <= summary.keys()
    # fashionmnist (the default): 28*28*1*64 + 64 + 64*10 + 10
    assert summary["params"] == summary["trainable_params"] == 784 * 64 + 64 + 650
    assert summary["macs"] == 784 * 64 + 640
    assert summary["mac_convention"] == MAC_CONVENTION
    assert [row["type"] for row in summary["layers"]] == ["Flatten", "Linear", "ReLU", "Linear"]
    assert (summary["model"], summary["dataset"]) == ("mlp", "fashionmnist")


def test_cli_table_of_the_lecture_mlp():
    result = CliRunner().invoke(app, ["summary", *LECTURE_MLP])
    assert result.exit_code == 0, result.output
    assert "480,011,010 (480.0 M) = 1.92 GB" in result.output
    assert "FLOPs ~= 2 x MACs" in result.output
    header = next(line for line in result.output.splitlines() if line.startswith("Layer"))
    assert header.split() == ["Layer", "Type", "Output", "shape", "Params", "MACs", "RF", "Jump"]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model=nope", "model=nope is not a known model: choose one of"),
        ("dataset.image_size=ten", "dataset.image_size"),
        ("model.image_size=32", "does not accept an input of shape [1, 1, 28, 28]"),
        ("model.activation=swish", "model.activation='swish' is not known"),
    ],
)
def test_cli_bad_override_exits_2_without_traceback(monkeypatch, capsys, override, message):
    monkeypatch.setattr(sys, "argv", ["convbench", "summary", override])
    with pytest.raises(SystemExit) as exited:
        main()
    assert exited.value.code == EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert err.startswith("Error: ") and message in err
    assert "Traceback" not in err
