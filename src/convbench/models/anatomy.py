"""A model's layers, parameters, MACs and receptive fields, without weights: the analysis behind
`convbench summary` (convbench.commands.summary composes the config and renders the table).

`summarize(model, input_shape)` runs one forward pass of zeros through any module, with forward
hooks on the leaf modules, and gives each layer's output shape, parameters and MACs. Built under
`torch.device("meta")`, parameters get shapes but no storage, so a config with hundreds of
millions of parameters summarizes in a second or two (mostly torch's one-time imports of its meta
kernels) without allocating its weights.

The lecture's dense-versus-conv arithmetic is two commands. A two-layer MLP on a 400x400 RGB image
with 1000 hidden units and 10 classes has "nearly 500 million" parameters:

    convbench summary model=mlp 'model.hidden=[1000]' dataset=cifar10 dataset.image_size=400
    # 400*400*3*1000 + 1000 (hidden) + 1000*10 + 10 (output) = 480,011,010 parameters

LeNet on the same image: its conv layers keep 456 and 2,416 parameters at any image size; only the
dense classifier after the flatten grows with the image:

    convbench summary model=lenet dataset=cifar10 dataset.image_size=400

(`dataset.image_size` differing from the stored size only matters for training, where batches are
resized; the model just sees `image_size`.)

Conventions, also printed with every summary:

- MACs (multiply-accumulates) count one per weight use in Conv and Linear modules for the given
  input (batch 1 from the CLI), in an eval-mode forward: Conv: output elements x in_channels/groups
  x kernel area; transposed Conv: input elements x out_channels/groups x kernel area; Linear:
  output elements x in_features. Bias adds, activations, pooling, normalization and residual
  additions count 0. FLOPs ~= 2 x MACs. Layers called twice appear twice; their parameters count
  once. Totals of parameters come from `model.parameters()`, so they are exact even where a
  parameter belongs to a non-leaf module (and thus to no row).
- Receptive field (rf) and jump (effective stride), per axis, in input pixels, of one position of
  a layer's output map, with the standard recurrence over windows of kernel k, stride s and
  dilation d: rf_out = rf_in + d*(k-1)*jump_in, jump_out = jump_in*s. Padding is ignored (so rf can
  exceed the image, as in the literature). Adaptive pooling from n to o positions is a window of
  the widest cell PyTorch uses (ceil-based, exactly n/o when o divides n) with stride max(1, n//o);
  global pooling (o = 1) therefore covers the whole input map. Only 4-D (N, C, H, W) outputs get an
  rf: after a flatten no spatial position is left.
- Branches (Inception, residual blocks) are handled by carrying (rf, jump) on tensors, not on
  modules: a `TorchFunctionMode` sees every torch call of the forward (modules' F.conv2d, and
  also functional pooling, torch.cat, +, F.pad, views), gives each output the element-wise maximum
  of its inputs' values, and moves it through the window for conv and pooling calls. Where
  branches merge, the result is the widest branch's rf: the rf of the merged map, since a merged
  position depends on every branch and the branches' windows share a centre (asymmetric padding
  offsets are ignored, as everywhere here); merged maps share a resolution, so their jumps agree.
  On sequential networks this is the textbook recurrence exactly. Checked against known
  values: torchvision AlexNet 195, VGG-16 212, ResNet-50 427, Inception-v3 (Mixed_7c) 1311.
  Not modelled (passed through unchanged): transposed convs, upsampling, unfold.
"""

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cache, partial

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

MAC_CONVENTION = (
    "MACs: one multiply-accumulate per weight use in Conv and Linear layers, eval-mode forward of "
    "the input shown; bias adds, activations, pooling, normalization and residual additions are "
    "not counted; FLOPs ~= 2 x MACs."
)
RECEPTIVE_FIELD_NOTE = (
    "RF: receptive field of one output position, in input pixels (padding ignored, not clipped to "
    "the image); Jump: effective stride in input pixels. HxW where the axes differ; branches merge "
    "by maximum; global/adaptive pooling covers the cells it averages."
)


@dataclass(frozen=True)
class Geometry:
    """Receptive field and jump (effective stride) of a feature map, per axis (height, width)."""

    rf: tuple[int, int] = (1, 1)
    jump: tuple[int, int] = (1, 1)

    def through(self, kernel, stride, dilation) -> "Geometry":
        """After a window: rf += d*(k-1)*jump, jump *= stride (each a (height, width) pair)."""
        rf = tuple(
            field + d * (k - 1) * jump
            for field, k, d, jump in zip(self.rf, kernel, dilation, self.jump, strict=True)
        )
        jump = tuple(jump * s for jump, s in zip(self.jump, stride, strict=True))
        return Geometry(rf, jump)

    @staticmethod
    def widest(geometries: Sequence["Geometry"]) -> "Geometry":
        """Where branches merge: a merged position sees what every branch saw."""
        rf = tuple(max(g.rf[axis] for g in geometries) for axis in (0, 1))
        jump = tuple(max(g.jump[axis] for g in geometries) for axis in (0, 1))
        return Geometry(rf, jump)


# Argument names of the spatial calls, in positional order (torch and F spell them alike).
_ARGUMENT_NAMES = {
    "conv": ("input", "weight", "bias", "stride", "padding", "dilation", "groups"),
    "pool": ("input", "kernel_size", "stride", "padding", "dilation"),
    # avg_pool2d has no dilation: its fifth argument is ceil_mode
    "avg_pool": ("input", "kernel_size", "stride", "padding"),
    "adaptive": ("input", "output_size"),
}


@cache
def _spatial_calls() -> dict:
    """The torch functions that move a receptive field, as the function mode sees them."""
    return {
        F.conv2d: "conv",  # nn.Conv2d calls this (it is torch.conv2d)
        F.max_pool2d: "pool",
        F.max_pool2d_with_indices: "pool",
        torch.max_pool2d: "pool",
        F.avg_pool2d: "avg_pool",
        F.adaptive_avg_pool2d: "adaptive",
        F.adaptive_max_pool2d: "adaptive",
        F.adaptive_max_pool2d_with_indices: "adaptive",
    }


def _pair(value) -> tuple[int, int]:
    if isinstance(value, int):
        return (value, value)
    value = tuple(value)
    return (value[0], value[0]) if len(value) == 1 else value[-2:]


def _adaptive_window(size_in: int, size_out: int) -> tuple[int, int]:
    """(kernel, stride) of adaptive pooling: cell i spans [floor(i*n/o), ceil((i+1)*n/o))."""
    widest = max(
        -(-(cell + 1) * size_in // size_out) - cell * size_in // size_out
        for cell in range(size_out)
    )
    return widest, max(1, size_in // size_out)


def _spatial_window(func, args, kwargs, *, output) -> tuple | None:
    """(kernel, stride, dilation) pairs of a conv or pooling call, or None for any other call."""
    kind = _spatial_calls().get(func)
    if kind is None:
        return None
    named = dict(zip(_ARGUMENT_NAMES[kind], args, strict=False)) | kwargs
    if kind == "conv":
        kernel = tuple(named["weight"].shape[-2:])
        return kernel, _pair(named.get("stride", 1)), _pair(named.get("dilation", 1))
    if kind in ("pool", "avg_pool"):
        kernel = _pair(named["kernel_size"])
        stride = _pair(named.get("stride") or kernel)  # None or [] means stride = kernel
        return kernel, stride, _pair(named.get("dilation", 1))
    sizes_in, sizes_out = named["input"].shape[-2:], _first_tensor(output).shape[-2:]
    windows = [_adaptive_window(n, o) for n, o in zip(sizes_in, sizes_out, strict=True)]
    return tuple(k for k, _ in windows), tuple(s for _, s in windows), (1, 1)


def _tensors(value) -> Iterator[torch.Tensor]:
    """Every tensor inside nested lists, tuples and dicts (torch.cat takes a list)."""
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _tensors(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _tensors(item)


def _first_tensor(value) -> torch.Tensor | None:
    return next(_tensors(value), None)


class GeometryTracker(TorchFunctionMode):
    """Carries a `Geometry` along every tensor that torch calls produce during a forward pass.

    Outputs get the widest geometry of their tensor inputs (so cat and + merge branches), moved
    through the window for conv and pooling calls. Tensors built from no tracked input (constants,
    parameters) stay untracked.
    """

    def __init__(self):
        super().__init__()
        # id -> (tensor, geometry). Holding the tensor keeps its id from being reused by a new
        # tensor mid-forward; on the meta device that costs nothing.
        self._by_id: dict[int, tuple[torch.Tensor, Geometry]] = {}

    def mark(self, tensor: torch.Tensor, geometry: Geometry) -> None:
        self._by_id[id(tensor)] = (tensor, geometry)

    def geometry_of(self, tensor: torch.Tensor) -> Geometry | None:
        held, geometry = self._by_id.get(id(tensor), (None, None))
        return geometry if held is tensor else None

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        output = func(*args, **kwargs)
        known = [g for t in _tensors((args, kwargs)) if (g := self.geometry_of(t)) is not None]
        if known:
            geometry = Geometry.widest(known)
            window = _spatial_window(func, args, kwargs, output=output)
            if window is not None:
                geometry = geometry.through(*window)
            for tensor in _tensors(output):
                self.mark(tensor, geometry)
        return output


def _layer_macs(module: nn.Module, inputs: tuple, output: torch.Tensor | None) -> int:
    """Multiply-accumulates of one call (see MAC_CONVENTION); 0 for every other layer type."""
    if output is None:
        return 0
    if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        kernel_area = math.prod(module.kernel_size)
        return output.numel() * (module.in_channels // module.groups) * kernel_area
    if isinstance(module, (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
        # Each input element is spread over out_channels/groups kernels.
        kernel_area = math.prod(module.kernel_size)
        return _first_tensor(inputs).numel() * (module.out_channels // module.groups) * kernel_area
    if isinstance(module, nn.Linear):
        return output.numel() * module.in_features  # output.numel() includes leading dims
    return 0


def _record_layer(module, inputs, output, *, name, tracker, rows, counted) -> None:
    """Forward hook of a leaf module (bound to its `name` and the shared `tracker`, `rows` and
    `counted` with functools.partial): append its row to `rows`."""
    out = _first_tensor(output)
    geometry = tracker.geometry_of(out) if out is not None and out.dim() == 4 else None
    first_call = id(module) not in counted
    counted.add(id(module))
    rows.append(
        {
            "name": name,
            "type": type(module).__name__,
            "output_shape": list(out.shape) if out is not None else None,
            "params": sum(p.numel() for p in module.parameters()) if first_call else 0,
            "macs": _layer_macs(module, inputs, out),
            "receptive_field": list(geometry.rf) if geometry else None,
            "jump": list(geometry.jump) if geometry else None,
        }
    )


def _device_of(model: nn.Module) -> torch.device:
    """Where the probe input must live: with the model's tensors (meta for a tensor-free model)."""
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("meta")


def _forward_with_hooks(model: nn.Module, input_shape: Sequence[int]) -> list[dict]:
    """One eval-mode forward of zeros shaped `input_shape`; returns the leaf modules' rows."""
    device = _device_of(model)
    tracker, rows, counted = GeometryTracker(), [], set()
    handles = [
        module.register_forward_hook(
            partial(_record_layer, name=name, tracker=tracker, rows=rows, counted=counted)
        )
        for name, module in model.named_modules()
        if next(module.children(), None) is None
    ]
    modes = {module: module.training for module in model.modules()}
    try:
        model.eval()  # inference: no dropout, auxiliary heads off
        with torch.no_grad(), torch.device(device):
            probe = torch.zeros(*input_shape)
            tracker.mark(probe, Geometry())
            with tracker:
                model(probe)
    except RuntimeError as exc:
        raise ValueError(
            f"{type(model).__name__} does not accept an input of shape {list(input_shape)} ({exc}). "
            "Check that the model's in_channels/image_size agree with the dataset's."
        ) from None
    finally:
        for handle in handles:
            handle.remove()
        for module, training in modes.items():
            module.training = training
    return rows


def summarize(model: nn.Module, input_shape: Sequence[int]) -> dict:
    """Layers and totals of `model` for an input of `input_shape` (batch included).

    Runs one forward pass without autograd on the device of the model's parameters: a model built
    under `torch.device("meta")` costs no memory and no arithmetic. The model's train/eval flags
    are restored afterwards. Keys: model, input_shape, params, trainable_params, param_bytes, macs,
    mac_convention, receptive_field_note, layers (one dict per leaf-module call, in call order:
    name, type, output_shape, params, macs, receptive_field, jump).
    """
    rows = _forward_with_hooks(model, input_shape)
    parameters = list(model.parameters())
    return {
        "model": type(model).__name__,
        "input_shape": list(input_shape),
        "params": sum(p.numel() for p in parameters),
        "trainable_params": sum(p.numel() for p in parameters if p.requires_grad),
        "param_bytes": sum(p.numel() * p.element_size() for p in parameters),
        "macs": sum(row["macs"] for row in rows),
        "mac_convention": MAC_CONVENTION,
        "receptive_field_note": RECEPTIVE_FIELD_NOTE,
        "layers": rows,
    }
