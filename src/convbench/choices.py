"""Fast by default: what `trainer.precision=auto` and `trainer.channels_last=auto` choose.

The rule comes from measurements (benchmarks/precision.py; README, "Results measured here"):

- bf16 autocast where the device computes bf16 natively (a CUDA GPU that supports it; a CPU with
  AVX512-BF16 or AMX) and the model does enough arithmetic per image for it to pay: at least
  MIN_MACS multiply-accumulates. The threshold is a conservative one: on the 2-core AMX CPU
  measured, bf16 also sped up the MLP and LeNet-5 (README), but those runs were noisy and a
  GPU, where a small model is bound by kernel launches that casts only add to, was not at hand.
  ResNet-20's accuracy in bf16 matched fp32 within seed noise (3 seeds each).
- channels_last for conv nets on the same condition (convolutions of that size run faster in
  NHWC on both CPU and GPU); a model without Conv2d layers keeps its layout.

An explicit value (fp32, bf16, fp16; true, false) is always used as given. The choice and its
reason are printed in the run's first line and recorded in metrics.json.
"""

from dataclasses import dataclass

import torch
from torch import nn

MIN_MACS = 5_000_000  # per image; LeNet-5 is 0.42 M, ResNet-20 on 28x28 31 M
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


def _millions(macs: int) -> str:
    return f"{macs / 1e6:.1f} M MACs per image"


def choose_precision(setting: str, device: torch.device, macs: int) -> Choice:
    if setting != "auto":
        return Choice(setting, "as set")
    if not native_bf16(device):
        return Choice("fp32", f"auto: {device.type} has no native bf16")
    if macs < MIN_MACS:
        return Choice("fp32", f"auto: {_millions(macs)}, too few for bf16 to pay")
    return Choice("bf16", f"auto: native bf16 on {device.type}, {_millions(macs)}")


def choose_channels_last(setting, model: nn.Module, device: torch.device, macs: int) -> Choice:
    switch = SWITCH_VALUES[str(setting).lower()]
    if switch is not None:
        return Choice(switch, "as set")
    if not any(isinstance(module, nn.Conv2d) for module in model.modules()):
        return Choice(False, "auto: no conv layers")
    if device.type not in ("cpu", "cuda") or macs < MIN_MACS:
        return Choice(False, f"auto: {_millions(macs)} on {device.type}")
    return Choice(True, f"auto: conv net, {_millions(macs)} on {device.type}")
