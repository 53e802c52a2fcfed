"""ONNX graphs for VGGish and its classifier head, built from named weight arrays.

The layer stack is vggish_slim.define_vggish_slim: 3x3 SAME convolutions with ReLU,
2x2/2 max-pools, flatten, two 4096 ReLU layers and the 128-d embedding without ReLU.
TensorFlow stores convolution kernels HWIO and flattens NHWC; ONNX convolves NCHW, so
kernels are transposed and pool4's output is put back in NHWC order before the flatten,
otherwise fc1's weights would meet the features in the wrong order.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

import numpy as np
import numpy.typing as npt
import onnx
from onnx import TensorProto, helper, numpy_helper

from earwitness.cloud.secondopinion.vggish import params

OPSET = 17
INPUT = "features"
OUTPUT = "embedding"
HEAD_INPUT = "embedding_uint8"
HEAD_OUTPUT = "scores"

Weights = Mapping[str, npt.NDArray[np.float32]]


def vggish_model(weights: Weights, metadata: Mapping[str, str]) -> onnx.ModelProto:
    """The VGGish graph: input (n, 96, 64) log-mel examples, output (n, 128) embeddings."""
    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = [
        numpy_helper.from_array(
            np.array([-1, 1, params.NUM_FRAMES, params.NUM_BANDS], np.int64), "input_shape"
        ),
        numpy_helper.from_array(np.array([-1, params.FLATTEN_SIZE], np.int64), "flat_shape"),
    ]
    nodes.append(helper.make_node("Reshape", [INPUT, "input_shape"], ["x0"]))
    x = "x0"
    for name, _cin, _cout in params.CONV_LAYERS:
        tag = name.replace("/", "_")
        kernel = np.ascontiguousarray(weights[f"vggish/{name}/weights"].transpose(3, 2, 0, 1))
        inits += [
            numpy_helper.from_array(kernel.astype(np.float32), f"{tag}_w"),
            numpy_helper.from_array(
                weights[f"vggish/{name}/biases"].astype(np.float32), f"{tag}_b"
            ),
        ]
        nodes += [
            helper.make_node(
                "Conv",
                [x, f"{tag}_w", f"{tag}_b"],
                [f"{tag}_conv"],
                kernel_shape=[3, 3],
                pads=[1, 1, 1, 1],
                strides=[1, 1],
            ),
            helper.make_node("Relu", [f"{tag}_conv"], [f"{tag}_relu"]),
        ]
        x = f"{tag}_relu"
        if name in params.POOL_AFTER:
            # 2x2 stride-2 SAME pooling on even sizes (96x64 ... 12x8) needs no padding.
            nodes.append(
                helper.make_node(
                    "MaxPool", [x], [f"{tag}_pool"], kernel_shape=[2, 2], strides=[2, 2]
                )
            )
            x = f"{tag}_pool"
    nodes += [
        helper.make_node("Transpose", [x], ["pool4_nhwc"], perm=[0, 2, 3, 1]),
        helper.make_node("Reshape", ["pool4_nhwc", "flat_shape"], ["flat"]),
    ]
    x = "flat"
    for name, _fin, _fout, relu in params.FC_LAYERS:
        tag = name.replace("/", "_")
        inits += [
            numpy_helper.from_array(
                weights[f"vggish/{name}/weights"].astype(np.float32), f"{tag}_w"
            ),
            numpy_helper.from_array(
                weights[f"vggish/{name}/biases"].astype(np.float32), f"{tag}_b"
            ),
        ]
        out = f"{tag}_fc" if relu else OUTPUT
        nodes.append(helper.make_node("Gemm", [x, f"{tag}_w", f"{tag}_b"], [out]))
        if relu:
            nodes.append(helper.make_node("Relu", [out], [f"{tag}_relu"]))
            x = f"{tag}_relu"
    graph = helper.make_graph(
        nodes,
        "vggish",
        [
            helper.make_tensor_value_info(
                INPUT, TensorProto.FLOAT, ["n", params.NUM_FRAMES, params.NUM_BANDS]
            )
        ],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["n", params.EMBEDDING_SIZE])],
        inits,
    )
    return _finish(graph, metadata)


def head_model(
    weights: npt.NDArray[np.float32],
    bias: npt.NDArray[np.float32],
    classes: list[str],
    metadata: Mapping[str, str],
) -> onnx.ModelProto:
    """Classifier head: uint8 post-processed embeddings (n, 128) -> sigmoid scores (n, C).
    The dequantization is part of the graph so the head consumes the release format."""
    from earwitness.cloud.secondopinion.vggish.postprocess import QUANT_SCALE

    if weights.shape != (params.EMBEDDING_SIZE, len(classes)) or bias.shape != (len(classes),):
        raise ValueError(
            f"head weights {weights.shape} / bias {bias.shape} for {len(classes)} classes"
        )
    inits = [
        numpy_helper.from_array(np.array(QUANT_SCALE, np.float32), "q_scale"),
        numpy_helper.from_array(np.array(params.QUANTIZE_MIN_VAL, np.float32), "q_min"),
        numpy_helper.from_array(weights.astype(np.float32), "head_w"),
        numpy_helper.from_array(bias.astype(np.float32), "head_b"),
    ]
    nodes = [
        helper.make_node("Cast", [HEAD_INPUT], ["q"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["q", "q_scale"], ["q_scaled"]),
        helper.make_node("Add", ["q_scaled", "q_min"], ["dequantized"]),
        helper.make_node("Gemm", ["dequantized", "head_w", "head_b"], ["logits"]),
        helper.make_node("Sigmoid", ["logits"], [HEAD_OUTPUT]),
    ]
    graph = helper.make_graph(
        nodes,
        "vggish_head",
        [
            helper.make_tensor_value_info(
                HEAD_INPUT, TensorProto.UINT8, ["n", params.EMBEDDING_SIZE]
            )
        ],
        [helper.make_tensor_value_info(HEAD_OUTPUT, TensorProto.FLOAT, ["n", len(classes)])],
        inits,
    )
    return _finish(graph, {**metadata, "classes": json.dumps(classes)})


def _finish(graph: onnx.GraphProto, metadata: Mapping[str, str]) -> onnx.ModelProto:
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="earwitness"
    )
    # IR version 8 keeps the files loadable by ONNX Runtime releases a few years old.
    model.ir_version = 8
    helper.set_model_props(model, dict(metadata))
    onnx.checker.check_model(model)
    return model
