#!/usr/bin/env python3
"""Make the float32 SFace file OpenCV 4.6 can load from OpenCV Zoo's block-quantized one.

    sface-dequantize.py face_recognition_sface_2021dec_int8bq.onnx OUT.onnx

OpenCV Zoo's `face_recognition_sface_2021dec_int8bq.onnx` (opset 21) stores its weights as
int8 with one float scale per block of 64 (`DequantizeLinear` with `block_size`), which
OpenCV 4.6 cannot read. This computes every such `DequantizeLinear(q, scale, zero_point)`
whose inputs are constants once, as `(q - zero_point) * scale` with each scale repeated
`block_size` times along `axis`, folds a constant `Reshape` that follows it, and stores the
result as a float32 initializer under the consumer's input name. `Dropout` (the identity at
inference) is bypassed, graph inputs that are initializers or never fed are dropped, and the
model is written as opset 11, IR version 6. Nothing random and no timestamps: the output
is the same bytes on every run (scripts/setup.sh pins its sha256).
"""
import sys

import numpy as np
import onnx
from onnx import helper, numpy_helper


def attr(node, name, default):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def dequantize(q, scale, zero, axis, block):
    q = q.astype(np.float32)
    zero = np.zeros_like(scale) if zero is None else zero.astype(np.float32)
    if block and scale.ndim == q.ndim and scale.shape != q.shape:
        scale = np.repeat(scale, block, axis=axis)
        zero = np.repeat(zero, block, axis=axis)
        sl = [slice(0, n) for n in q.shape]
        scale, zero = scale[tuple(sl)], zero[tuple(sl)]
    elif scale.ndim == 1 and q.ndim > 1 and scale.size > 1:
        shape = [1] * q.ndim
        shape[axis] = scale.size
        scale, zero = scale.reshape(shape), zero.reshape(shape)
    return ((q - zero) * scale).astype(np.float32)


def main(src, dst):
    m = onnx.load(src)
    g = m.graph
    consts = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    for n in g.node:
        if n.op_type == "Constant":
            consts[n.output[0]] = numpy_helper.to_array(attr(n, "value", None))
    folded = {}
    drop = set()
    rename = {}
    for k, n in enumerate(g.node):
        ins = [rename.get(i, i) for i in n.input]
        if n.op_type == "DequantizeLinear" and all(i in consts for i in ins if i):
            q, scale = consts[ins[0]], consts[ins[1]]
            zero = consts[ins[2]] if len(ins) > 2 and ins[2] else None
            axis = attr(n, "axis", 1)
            axis = axis + q.ndim if axis < 0 else axis
            w = dequantize(q, scale, zero, axis, attr(n, "block_size", 0))
            folded[n.output[0]] = consts[n.output[0]] = w
            drop.add(k)
        elif n.op_type == "Reshape" and ins[0] in folded and ins[1] in consts:
            w = folded.pop(ins[0])
            shape = [int(v) for v in consts[ins[1]]]
            shape = [w.shape[j] if v == 0 else v for j, v in enumerate(shape)]
            folded[n.output[0]] = consts[n.output[0]] = w.reshape(shape)
            drop.add(k)
        elif n.op_type == "Dropout":
            rename[n.output[0]] = ins[0]
            drop.add(k)
        elif n.op_type == "Constant":
            drop.add(k)
    nodes = []
    for k, n in enumerate(g.node):
        if k in drop:
            continue
        new = onnx.NodeProto()
        new.CopyFrom(n)
        del new.input[:]
        new.input.extend(rename.get(i, i) for i in n.input)
        nodes.append(new)
    used = {i for n in nodes for i in n.input}
    made = {o for n in nodes for o in n.output}
    inits = []
    for name in sorted(used - made):
        if name in folded:
            inits.append(numpy_helper.from_array(folded[name].astype(np.float32), name))
        elif name in consts:
            inits.append(numpy_helper.from_array(np.asarray(consts[name]), name))
    init_names = {i.name for i in inits}
    inputs = [i for i in g.input if i.name in used and i.name not in init_names]
    graph = helper.make_graph(nodes, g.name, inputs, list(g.output), inits)
    out = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)])
    out.ir_version = 6
    # The producer name of the reference file in ../shared/models (its README describes
    # the same procedure); with it the output is byte-identical to that file.
    out.producer_name = "dequantize_bq.py"
    onnx.checker.check_model(out)
    onnx.save(out, dst)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
