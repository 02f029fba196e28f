"""Fast by default: what `trainer.precision=auto` and `trainer.channels_last=auto` choose.

The rule comes from measurements (benchmarks/precision.py and whole runs; README, "Speed and
recipes"):

- bf16 autocast where the device computes bf16 natively. On a CPU with AVX512-BF16 or AMX, for
  every model: on the 2-core AMX CPU measured, whole two-epoch runs went 1.3x faster for LeNet-5
  (bf16 with channels_last), 1.15-1.6x for the MLP and 2.1x for ResNet-20, and the test accuracy
  of full default runs matched fp32 within seed noise (3 seeds each). On a CUDA GPU that supports
  bf16, only from MIN_MACS multiply-accumulates per image: a small model there is bound by kernel
  launches, which the casts only add to (not measured here; the safe side).
- channels_last for conv nets: on a CPU always (oneDNN's convolutions ran faster in NHWC for
  LeNet-5 and ResNet-20 alike, in fp32 and in bf16; LeNet in bf16 without it was slower than
  fp32), on a GPU from MIN_MACS. A model without Conv2d layers keeps its layout.

An explicit value (fp32, bf16, fp16; true, false) is always used as given. The choice and its
reason are printed in the run's first line and recorded in metrics.json.
"""

from dataclasses import dataclass

import torch
from torch import nn

MIN_MACS = 5_000_000  # per image, on a GPU; LeNet-5 is 0.42 M, ResNet-20 on 28x28 31 M
SWITCH_VALUES = {"auto": None, "true": True, "false": False}


@dataclass(frozen=True)
class Choice:
    value: object
    reason: str


def native_bf16(device: torch.device) -> bool:
    """Whether `device` computes bf16 in hardware rather than emulating it."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, check, lambda: False)() for check in checks)


def _pays(device: torch.device, macs: int) -> bool:
    """Whether a faster kernel path pays for its conversions: on a CPU always, on a GPU for
    models of MIN_MACS or more."""
    return device.type == "cpu" or macs >= MIN_MACS


def choose_precision(setting: str, device: torch.device, macs: int) -> Choice:
    if setting != "auto":
        return Choice(setting, "as set")
    if not native_bf16(device):
        return Choice("fp32", f"auto: {device.type} has no native bf16")
    if not _pays(device, macs):
        return Choice("fp32", f"auto: too few MACs for bf16 to pay on {device.type}")
    return Choice("bf16", f"auto: native bf16 on {device.type}")


def choose_channels_last(setting, model: nn.Module, *, device: torch.device, macs: int) -> Choice:
    switch = SWITCH_VALUES[str(setting).lower()]
    if switch is not None:
        return Choice(switch, "as set")
    if not any(isinstance(module, nn.Conv2d) for module in model.modules()):
        return Choice(False, "auto: no conv layers")
    if device.type not in ("cpu", "cuda") or not _pays(device, macs):
        return Choice(False, f"auto: too few MACs to pay on {device.type}")
    return Choice(True, f"auto: conv net on {device.type}")
