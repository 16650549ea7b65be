//! The one change lockerd makes to SFace's ONNX graph as it loads it, and just enough of
//! the protobuf wire format to make it (five rules; no protobuf crate).
//!
//! Why: OpenCV 4.6 holds an ONNX file's weights about 2.6 times over while importing it,
//! and keeps a second copy of every convolution's weights once it has fused the
//! `BatchNormalization` that follows it (it keeps the originals "unchanged"). For SFace's
//! 38.7 MB that was most of lockerd's memory: a 60 MiB load peak above what stays, and
//! 12 MiB more after the first face.
//!
//! What [`split_sface`] does, on the bytes of the file:
//! - the fully connected head (`Gemm`, 128 x 50,176 weights, 25.7 MB, and the
//!   `BatchNormalization` after it) is taken out of the graph into a [`Head`] that Rust
//!   computes. Its weights were dequantized from int8 blocks of 64 (OpenCV Zoo's
//!   block-quantized file, see `../shared/models/README.md`); each block's integers and
//!   scale are recovered and kept only if they give back every weight bit for bit, so
//!   the head holds 7 MB instead of 25.7 and computes the same weights;
//! - each `BatchNormalization` that directly follows a `Conv` is folded into that
//!   convolution's weights and bias, the arithmetic OpenCV itself does when it fuses them;
//! - the rest (the convolutions, PReLUs, the last `BatchNormalization` and the `Flatten`)
//!   is written back as an ONNX model whose output is the head's input.
//!
//! [`super::sface::Sface`] owns the result; a file of another shape is an error here and
//! is then loaded whole (more memory, the same embedding).

use std::collections::{HashMap, HashSet};

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum OnnxError {
    #[error("the protobuf data ends inside a field")]
    Truncated,
    #[error("protobuf wire type {0} is not one ONNX uses")]
    WireType(u8),
    #[error("a name in the graph is not UTF-8")]
    Utf8,
    #[error("not the SFace graph this loader knows: {0}")]
    Shape(String),
}

type Result<T> = std::result::Result<T, OnnxError>;

fn shape<T>(what: impl Into<String>) -> Result<T> {
    Err(OnnxError::Shape(what.into()))
}

// --- the wire format ------------------------------------------------------------------

/// One field's value.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Val<'a> {
    Varint(u64),
    Fixed64(u64),
    Bytes(&'a [u8]),
    Fixed32(u32),
}

fn varint(buf: &[u8], pos: &mut usize) -> Result<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*pos).ok_or(OnnxError::Truncated)?;
        *pos += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(OnnxError::Truncated)
}

fn take<'a>(buf: &'a [u8], pos: &mut usize, n: usize) -> Result<&'a [u8]> {
    let end = pos.checked_add(n).ok_or(OnnxError::Truncated)?;
    let s = buf.get(*pos..end).ok_or(OnnxError::Truncated)?;
    *pos = end;
    Ok(s)
}

/// The fields of one message, in order: (field number, value, the field's own bytes).
fn fields(buf: &[u8]) -> Result<Vec<(u32, Val<'_>, &[u8])>> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < buf.len() {
        let start = pos;
        let tag = varint(buf, &mut pos)?;
        let val = match (tag & 7) as u8 {
            0 => Val::Varint(varint(buf, &mut pos)?),
            1 => {
                let b = take(buf, &mut pos, 8)?;
                Val::Fixed64(u64::from_le_bytes(
                    b.try_into().map_err(|_| OnnxError::Truncated)?,
                ))
            }
            2 => {
                let n =
                    usize::try_from(varint(buf, &mut pos)?).map_err(|_| OnnxError::Truncated)?;
                Val::Bytes(take(buf, &mut pos, n)?)
            }
            5 => {
                let b = take(buf, &mut pos, 4)?;
                Val::Fixed32(u32::from_le_bytes(
                    b.try_into().map_err(|_| OnnxError::Truncated)?,
                ))
            }
            w => return Err(OnnxError::WireType(w)),
        };
        out.push(((tag >> 3) as u32, val, &buf[start..pos]));
    }
    Ok(out)
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_bytes(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    put_varint(out, u64::from(field) << 3 | 2);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn put_int(out: &mut Vec<u8>, field: u32, v: i64) {
    put_varint(out, u64::from(field) << 3);
    put_varint(out, v as u64);
}

fn text(b: &[u8]) -> Result<&str> {
    std::str::from_utf8(b).map_err(|_| OnnxError::Utf8)
}

// --- the ONNX messages it reads -------------------------------------------------------

/// ModelProto.graph, GraphProto.node / initializer / output, NodeProto.input / output /
/// op_type / attribute, AttributeProto.name / f / i, TensorProto.dims / data_type /
/// float_data / name / raw_data, ValueInfoProto.name.
mod field {
    pub const MODEL_GRAPH: u32 = 7;
    pub const GRAPH_NODE: u32 = 1;
    pub const GRAPH_INITIALIZER: u32 = 5;
    pub const GRAPH_OUTPUT: u32 = 12;
    pub const NODE_INPUT: u32 = 1;
    pub const NODE_OUTPUT: u32 = 2;
    pub const NODE_OP_TYPE: u32 = 4;
    pub const NODE_ATTRIBUTE: u32 = 5;
    pub const ATTR_NAME: u32 = 1;
    pub const ATTR_F: u32 = 2;
    pub const ATTR_I: u32 = 3;
    pub const TENSOR_DIMS: u32 = 1;
    pub const TENSOR_DATA_TYPE: u32 = 2;
    pub const TENSOR_FLOAT_DATA: u32 = 4;
    pub const TENSOR_NAME: u32 = 8;
    pub const TENSOR_RAW_DATA: u32 = 9;
    pub const VALUE_INFO_NAME: u32 = 1;
    pub const VALUE_INFO_TYPE: u32 = 2;
    /// TypeProto.tensor_type, TypeProto.Tensor.elem_type / shape,
    /// TensorShapeProto.dim, TensorShapeProto.Dimension.dim_value.
    pub const TYPE_TENSOR: u32 = 1;
    pub const TENSOR_TYPE_ELEM: u32 = 1;
    pub const TENSOR_TYPE_SHAPE: u32 = 2;
    pub const SHAPE_DIM: u32 = 1;
    pub const DIM_VALUE: u32 = 1;
    /// TensorProto.DataType FLOAT.
    pub const FLOAT: u64 = 1;
}

#[derive(Debug)]
struct Node<'a> {
    raw: &'a [u8],
    op: &'a str,
    inputs: Vec<&'a str>,
    outputs: Vec<&'a str>,
    floats: HashMap<&'a str, f32>,
    ints: HashMap<&'a str, i64>,
}

impl<'a> Node<'a> {
    fn parse(raw: &'a [u8]) -> Result<Node<'a>> {
        let mut n = Node {
            raw,
            op: "",
            inputs: Vec::new(),
            outputs: Vec::new(),
            floats: HashMap::new(),
            ints: HashMap::new(),
        };
        for (f, v, _) in fields(raw)? {
            match (f, v) {
                (field::NODE_INPUT, Val::Bytes(b)) => n.inputs.push(text(b)?),
                (field::NODE_OUTPUT, Val::Bytes(b)) => n.outputs.push(text(b)?),
                (field::NODE_OP_TYPE, Val::Bytes(b)) => n.op = text(b)?,
                (field::NODE_ATTRIBUTE, Val::Bytes(b)) => {
                    let mut name = "";
                    let (mut fv, mut iv) = (None, None);
                    for (af, av, _) in fields(b)? {
                        match (af, av) {
                            (field::ATTR_NAME, Val::Bytes(s)) => name = text(s)?,
                            (field::ATTR_F, Val::Fixed32(x)) => fv = Some(f32::from_bits(x)),
                            (field::ATTR_I, Val::Varint(x)) => iv = Some(x as i64),
                            _ => {}
                        }
                    }
                    if let Some(x) = fv {
                        n.floats.insert(name, x);
                    }
                    if let Some(x) = iv {
                        n.ints.insert(name, x);
                    }
                }
                _ => {}
            }
        }
        Ok(n)
    }

    /// The node with other inputs and outputs, every other field as it was.
    fn rewritten(&self, inputs: &[&str], outputs: &[&str]) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(self.raw.len() + 64);
        for s in inputs {
            put_bytes(&mut out, field::NODE_INPUT, s.as_bytes());
        }
        for s in outputs {
            put_bytes(&mut out, field::NODE_OUTPUT, s.as_bytes());
        }
        for (f, _, raw) in fields(self.raw)? {
            if f != field::NODE_INPUT && f != field::NODE_OUTPUT {
                out.extend_from_slice(raw);
            }
        }
        Ok(out)
    }
}

#[derive(Debug)]
struct Tensor<'a> {
    dims: Vec<i64>,
    float: bool,
    /// raw_data, or float_data as packed little-endian bytes.
    data: Option<&'a [u8]>,
}

impl<'a> Tensor<'a> {
    fn parse(raw: &'a [u8]) -> Result<(&'a str, Tensor<'a>)> {
        let mut t = Tensor {
            dims: Vec::new(),
            float: false,
            data: None,
        };
        let mut name = "";
        for (f, v, _) in fields(raw)? {
            match (f, v) {
                (field::TENSOR_DIMS, Val::Varint(d)) => t.dims.push(d as i64),
                (field::TENSOR_DIMS, Val::Bytes(packed)) => {
                    let mut p = 0;
                    while p < packed.len() {
                        t.dims.push(varint(packed, &mut p)? as i64);
                    }
                }
                (field::TENSOR_DATA_TYPE, Val::Varint(ty)) => t.float = ty == field::FLOAT,
                (field::TENSOR_NAME, Val::Bytes(s)) => name = text(s)?,
                (field::TENSOR_RAW_DATA, Val::Bytes(b)) => t.data = Some(b),
                (field::TENSOR_FLOAT_DATA, Val::Bytes(b)) => t.data = Some(b),
                _ => {}
            }
        }
        Ok((name, t))
    }

    /// The number of values; 0 for dims that make no sense (negative, overflowing).
    fn len(&self) -> usize {
        self.dims
            .iter()
            .try_fold(1usize, |n, &d| n.checked_mul(usize::try_from(d).ok()?))
            .unwrap_or(0)
    }

    /// The values, when this is a float tensor of `want` values.
    fn floats(&self, name: &str, want: usize) -> Result<Vec<f32>> {
        match self.data {
            Some(b) if self.float && self.len() == want && Some(b.len()) == want.checked_mul(4) => {
                Ok(b.chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect())
            }
            _ => shape(format!("{name} is not {want} float values")),
        }
    }
}

fn encode_tensor(name: &str, dims: &[i64], values: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(values.len() * 4 + name.len() + 32);
    for &d in dims {
        put_int(&mut out, field::TENSOR_DIMS, d);
    }
    put_int(&mut out, field::TENSOR_DATA_TYPE, field::FLOAT as i64);
    put_bytes(&mut out, field::TENSOR_NAME, name.as_bytes());
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    put_bytes(&mut out, field::TENSOR_RAW_DATA, &bytes);
    out
}

/// An initializer field: the float tensor `name` whose little-endian values are `data`,
/// each of its `scale.len()` rows (the first dimension) multiplied by its scale.
fn put_scaled_tensor(out: &mut Vec<u8>, name: &str, dims: &[i64], data: &[u8], scale: &[f32]) {
    let mut head = Vec::with_capacity(name.len() + 32);
    for &d in dims {
        put_int(&mut head, field::TENSOR_DIMS, d);
    }
    put_int(&mut head, field::TENSOR_DATA_TYPE, field::FLOAT as i64);
    put_bytes(&mut head, field::TENSOR_NAME, name.as_bytes());
    put_varint(&mut head, u64::from(field::TENSOR_RAW_DATA) << 3 | 2);
    put_varint(&mut head, data.len() as u64);
    put_varint(out, u64::from(field::GRAPH_INITIALIZER) << 3 | 2);
    put_varint(out, (head.len() + data.len()) as u64);
    out.extend_from_slice(&head);
    let per = data.len() / 4 / scale.len().max(1);
    for (row, s) in data.chunks_exact(per * 4).zip(scale) {
        for c in row.chunks_exact(4) {
            let w = f32::from_le_bytes([c[0], c[1], c[2], c[3]]) * s;
            out.extend_from_slice(&w.to_le_bytes());
        }
    }
}

/// A TypeProto: a float tensor of `rows` x `cols` (OpenCV wants a graph output typed).
fn float_matrix_type(rows: usize, cols: usize) -> Vec<u8> {
    let mut shape = Vec::new();
    for d in [rows, cols] {
        let mut dim = Vec::new();
        put_int(&mut dim, field::DIM_VALUE, d as i64);
        put_bytes(&mut shape, field::SHAPE_DIM, &dim);
    }
    let mut tensor = Vec::new();
    put_int(&mut tensor, field::TENSOR_TYPE_ELEM, field::FLOAT as i64);
    put_bytes(&mut tensor, field::TENSOR_TYPE_SHAPE, &shape);
    let mut ty = Vec::new();
    put_bytes(&mut ty, field::TYPE_TENSOR, &tensor);
    ty
}

// --- the head ---------------------------------------------------------------------------

/// Weights per block along a row of the head.
const BLOCK: usize = 64;

/// The head's weights, row-major (`out` rows of `input` values).
#[derive(Debug, Clone, PartialEq)]
enum Weights {
    /// Each block of [`BLOCK`] weights is `(q - zero) * scale`, exactly.
    Blocks {
        q: Vec<i8>,
        zero: Vec<f32>,
        scale: Vec<f32>,
    },
    Plain(Vec<f32>),
}

/// `Gemm` (y = W x + b) and the `BatchNormalization` after it, as OpenCV computes them
/// (the normalization as a per-output scale and shift).
#[derive(Debug, Clone, PartialEq)]
pub struct Head {
    input: usize,
    weights: Weights,
    bias: Vec<f32>,
    bn_scale: Vec<f32>,
    bn_shift: Vec<f32>,
}

/// The integers and scale of one block of weights dequantized from int8 as
/// `(q - zero) * scale` in float32, if there are ones that give back every weight exactly.
fn recover_block(w: &[f32]) -> Option<([i8; BLOCK], f32, f32)> {
    let mut q = [0i8; BLOCK];
    if w.len() != BLOCK || w.iter().any(|x| !x.is_finite()) {
        return None;
    }
    let (mn, mx) = w
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &x| {
            (a.min(x), b.max(x))
        });
    if mn == mx {
        // One value throughout: q = 1, zero = 0, scale = that value (0 for all zeros).
        q.fill(if mx == 0.0 { 0 } else { 1 });
        return Some((q, 0.0, mx));
    }
    // The integers span 255 steps when a block's quantization hit both ends, a step or
    // two fewer when rounding missed one.
    for steps in (BLOCK as i64..=255).rev() {
        let est = (f64::from(mx) - f64::from(mn)) / steps as f64;
        let k: Vec<i64> = w
            .iter()
            .map(|&x| (f64::from(x) / est).round() as i64)
            .collect();
        let (kmin, kmax) = (k.iter().min()?, k.iter().max()?);
        if kmax - kmin != steps {
            continue;
        }
        let bits = (est as f32).to_bits();
        for d in [0i64, 1, -1, 2, -2] {
            let scale = f32::from_bits((i64::from(bits) + d) as u32);
            if w.iter().zip(&k).all(|(&x, &ki)| (ki as f32) * scale == x) {
                // q - zero = k, with q in [-128, 127].
                let zero = -128 - kmin;
                for (qi, &ki) in q.iter_mut().zip(&k) {
                    *qi = i8::try_from(ki + zero).ok()?;
                }
                return Some((q, zero as f32, scale));
            }
        }
    }
    None
}

impl Weights {
    /// Blocks when every block is exactly int8 (the float values give back `raw`'s, bit
    /// for bit), else the floats as they are.
    fn from_le_bytes(raw: &[u8]) -> Weights {
        let floats = |b: &[u8]| -> Vec<f32> {
            b.chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect()
        };
        let n = raw.len() / 4;
        let blocks = n / BLOCK;
        let mut q = Vec::with_capacity(n);
        let (mut zero, mut scale) = (Vec::with_capacity(blocks), Vec::with_capacity(blocks));
        if n % BLOCK == 0 {
            for chunk in raw.chunks_exact(BLOCK * 4) {
                let Some((bq, z, s)) = recover_block(&floats(chunk)) else {
                    return Weights::Plain(floats(raw));
                };
                q.extend_from_slice(&bq);
                zero.push(z);
                scale.push(s);
            }
            return Weights::Blocks { q, zero, scale };
        }
        Weights::Plain(floats(raw))
    }

    fn bytes(&self) -> usize {
        match self {
            Weights::Blocks { q, zero, scale } => q.len() + 4 * (zero.len() + scale.len()),
            Weights::Plain(w) => 4 * w.len(),
        }
    }
}

impl Head {
    /// Input values it takes.
    pub fn input_len(&self) -> usize {
        self.input
    }

    /// Output values it gives.
    pub fn output_len(&self) -> usize {
        self.bias.len()
    }

    /// Bytes its weights take in memory.
    pub fn weight_bytes(&self) -> usize {
        self.weights.bytes()
    }

    /// Whether the weights are held as their int8 blocks.
    pub fn quantized(&self) -> bool {
        matches!(self.weights, Weights::Blocks { .. })
    }

    /// The head's output for `x` (the flattened feature map); None for a wrong length.
    pub fn apply(&self, x: &[f32]) -> Option<Vec<f32>> {
        if x.len() != self.input {
            return None;
        }
        let mut out = Vec::with_capacity(self.bias.len());
        for o in 0..self.bias.len() {
            // Eight running sums, so the loop vectorizes; the weights are the same floats.
            let mut lanes = [0f32; 8];
            match &self.weights {
                Weights::Blocks { q, zero, scale } => {
                    let row = o * self.input;
                    let blocks = self.input / BLOCK;
                    for b in 0..blocks {
                        let (z, s) = (zero[o * blocks + b], scale[o * blocks + b]);
                        let at = row + b * BLOCK;
                        let qs = &q[at..at + BLOCK];
                        let xs = &x[b * BLOCK..(b + 1) * BLOCK];
                        for (qc, xc) in qs.chunks_exact(8).zip(xs.chunks_exact(8)) {
                            for l in 0..8 {
                                lanes[l] += xc[l] * ((f32::from(qc[l]) - z) * s);
                            }
                        }
                    }
                }
                Weights::Plain(w) => {
                    let ws = &w[o * self.input..(o + 1) * self.input];
                    let mut wc = ws.chunks_exact(8);
                    let mut xc = x.chunks_exact(8);
                    for (a, b) in (&mut wc).zip(&mut xc) {
                        for l in 0..8 {
                            lanes[l] += a[l] * b[l];
                        }
                    }
                    for (a, b) in wc.remainder().iter().zip(xc.remainder()) {
                        lanes[0] += a * b;
                    }
                }
            }
            let y = lanes.iter().sum::<f32>() + self.bias[o];
            out.push(y * self.bn_scale[o] + self.bn_shift[o]);
        }
        Some(out)
    }
}

/// A `BatchNormalization`'s per-channel scale and shift, as OpenCV computes them:
/// `gamma / sqrt(var + eps)` and `beta - scale * mean`.
fn bn_affine(node: &Node, inits: &HashMap<&str, Tensor>, n: usize) -> Result<(Vec<f32>, Vec<f32>)> {
    let get = |i: usize| -> Result<Vec<f32>> {
        let name = node.inputs.get(i).copied().unwrap_or("");
        match inits.get(name) {
            Some(t) => t.floats(name, n),
            None => shape(format!("BatchNormalization input {name} is not a constant")),
        }
    };
    let (gamma, beta, mean, var) = (get(1)?, get(2)?, get(3)?, get(4)?);
    let eps = node.floats.get("epsilon").copied().unwrap_or(1e-5);
    let scale: Vec<f32> = gamma
        .iter()
        .zip(&var)
        .map(|(g, v)| g / (v + eps).sqrt())
        .collect();
    let shift = beta
        .iter()
        .zip(&mean)
        .zip(&scale)
        .map(|((b, m), s)| b - s * m)
        .collect();
    Ok((scale, shift))
}

/// SFace's graph without its head, as ONNX bytes OpenCV can read, and the head.
pub struct Split {
    pub body: Vec<u8>,
    pub head: Head,
    /// How many `BatchNormalization`s were folded into the convolution before them.
    pub folded: usize,
}

/// Split SFace's ONNX model (see the module comment).
pub fn split_sface(model: &[u8]) -> Result<Split> {
    let top = fields(model)?;
    let graph = match top.iter().find(|(f, _, _)| *f == field::MODEL_GRAPH) {
        Some((_, Val::Bytes(g), _)) => *g,
        _ => return shape("no graph"),
    };
    let gfields = fields(graph)?;
    let mut nodes = Vec::new();
    let mut inits: HashMap<&str, Tensor> = HashMap::new();
    // The initializers' names in the graph's order (the body is written in that order).
    let mut init_names = Vec::new();
    let mut outputs = Vec::new();
    for (f, v, _) in &gfields {
        match (*f, *v) {
            (field::GRAPH_NODE, Val::Bytes(b)) => nodes.push(Node::parse(b)?),
            (field::GRAPH_INITIALIZER, Val::Bytes(b)) => {
                let (name, t) = Tensor::parse(b)?;
                inits.insert(name, t);
                init_names.push(name);
            }
            (field::GRAPH_OUTPUT, Val::Bytes(b)) => {
                for (vf, vv, _) in fields(b)? {
                    if let (field::VALUE_INFO_NAME, Val::Bytes(s)) = (vf, vv) {
                        outputs.push(text(s)?);
                    }
                }
            }
            _ => {}
        }
    }
    let mut consumers: HashMap<&str, usize> = HashMap::new();
    for n in &nodes {
        for i in &n.inputs {
            *consumers.entry(i).or_default() += 1;
        }
    }

    // The head: the graph ends Gemm -> BatchNormalization.
    let [out_name] = outputs[..] else {
        return shape(format!("{} graph outputs, not 1", outputs.len()));
    };
    let Some(bn_at) = nodes.iter().position(|n| n.outputs == [out_name]) else {
        return shape("nothing makes the graph's output");
    };
    let bn = &nodes[bn_at];
    let gemm_at = nodes
        .iter()
        .position(|n| bn.inputs.first().is_some_and(|i| n.outputs == [*i]));
    let Some(gemm_at) = gemm_at.filter(|_| bn.op == "BatchNormalization") else {
        return shape("the output is not a BatchNormalization after a Gemm");
    };
    let gemm = &nodes[gemm_at];
    let attr = |k: &str, d: i64| gemm.ints.get(k).copied().unwrap_or(d);
    let fattr = |k: &str| gemm.floats.get(k).copied().unwrap_or(1.0);
    if gemm.op != "Gemm"
        || attr("transA", 0) != 0
        || attr("transB", 0) != 1
        || fattr("alpha") != 1.0
        || fattr("beta") != 1.0
        || gemm.inputs.len() != 3
        || consumers.get(gemm.outputs[0]) != Some(&1)
    {
        return shape("the Gemm is not y = x W' + b feeding only the last BatchNormalization");
    }
    let (x_name, w_name, b_name) = (gemm.inputs[0], gemm.inputs[1], gemm.inputs[2]);
    let Some(w) = inits.get(w_name) else {
        return shape("the Gemm's weights are not a constant");
    };
    let (out, input) = match w.dims[..] {
        [o, i] if o > 0 && i > 0 && w.len() > 0 => (o as usize, i as usize),
        _ => return shape("the Gemm's weights are not a matrix"),
    };
    let raw = match w.data {
        Some(r)
            if w.float
                && Some(r.len()) == out.checked_mul(input).and_then(|n| n.checked_mul(4)) =>
        {
            r
        }
        _ => return shape("the Gemm's weights are not raw float data"),
    };
    let bias = match inits.get(b_name) {
        Some(t) => t.floats(b_name, out)?,
        None => return shape("the Gemm's bias is not a constant"),
    };
    let (bn_scale, bn_shift) = bn_affine(bn, &inits, out)?;
    let head = Head {
        input,
        weights: Weights::from_le_bytes(raw),
        bias,
        bn_scale,
        bn_shift,
    };

    // Folding: each BatchNormalization whose input is a Conv's output and nothing else's.
    let producer: HashMap<&str, usize> = nodes
        .iter()
        .enumerate()
        .flat_map(|(k, n)| n.outputs.iter().map(move |o| (*o, k)))
        .collect();
    let mut drop: HashSet<usize> = [gemm_at, bn_at].into_iter().collect();
    // The inputs of each rewritten node, and the tensors that replace or join the
    // initializers (by name).
    let mut new_nodes: HashMap<usize, (Vec<String>, Vec<u8>)> = HashMap::new();
    let mut rescaled: HashMap<String, Vec<f32>> = HashMap::new();
    let mut added_inits: Vec<Vec<u8>> = Vec::new();
    let mut folded = 0;
    for (k, n) in nodes.iter().enumerate() {
        if k == bn_at || n.op != "BatchNormalization" || n.inputs.len() != 5 {
            continue;
        }
        let Some(&ck) = producer.get(n.inputs[0]) else {
            continue;
        };
        let conv = &nodes[ck];
        if conv.op != "Conv"
            || consumers.get(n.inputs[0]) != Some(&1)
            || conv.inputs.len() < 2
            || consumers.get(conv.inputs[1]) != Some(&1)
        {
            continue;
        }
        let Some(cw) = inits.get(conv.inputs[1]) else {
            continue;
        };
        let Some(&oc) = cw.dims.first().filter(|&&d| d > 0) else {
            continue;
        };
        let oc = oc as usize;
        if cw.len() == 0 {
            continue;
        }
        let Ok((scale, shift)) = bn_affine(n, &inits, oc) else {
            continue;
        };
        if !matches!(cw.data, Some(b) if cw.float && Some(b.len()) == cw.len().checked_mul(4) && cw.len() % oc == 0)
        {
            continue;
        }
        let old_bias = match conv.inputs.get(2) {
            Some(b) => match inits.get(b).map(|t| t.floats(b, oc)) {
                Some(Ok(v)) => v,
                _ => continue,
            },
            None => vec![0.0; oc],
        };
        let bias: Vec<f32> = old_bias
            .iter()
            .zip(&scale)
            .zip(&shift)
            .map(|((b, s), t)| b * s + t)
            .collect();
        let bias_name = format!("{}_bn_folded_bias", conv.inputs[1]);
        rescaled.insert(conv.inputs[1].to_owned(), scale);
        added_inits.push(encode_tensor(&bias_name, &[oc as i64], &bias));
        let ins = vec![
            conv.inputs[0].to_owned(),
            conv.inputs[1].to_owned(),
            bias_name,
        ];
        let refs: Vec<&str> = ins.iter().map(String::as_str).collect();
        let bytes = conv.rewritten(&refs, &n.outputs)?;
        new_nodes.insert(ck, (ins, bytes));
        drop.insert(k);
        folded += 1;
    }
    // An initializer stays when a node that stays reads it.
    let mut used: HashSet<&str> = HashSet::new();
    for (k, n) in nodes.iter().enumerate() {
        if drop.contains(&k) {
            continue;
        }
        match new_nodes.get(&k) {
            Some((ins, _)) => used.extend(ins.iter().map(String::as_str)),
            None => used.extend(n.inputs.iter().copied()),
        }
    }

    // The body: the model's other fields, then the graph (protobuf does not care about
    // the order) with those changes and the new output, written straight into the one
    // buffer (capacity not written to costs no memory).
    let mut body = Vec::with_capacity(model.len() + 1024);
    for (f, _, raw) in &top {
        if *f != field::MODEL_GRAPH {
            body.extend_from_slice(raw);
        }
    }
    // Room for the graph's tag and length, known only once it is written.
    const ROOM: usize = 11;
    let mark = body.len();
    body.resize(mark + ROOM, 0);
    let mut node_k = 0;
    let mut init_names = init_names.into_iter();
    for (f, v, raw) in &gfields {
        match (*f, *v) {
            (field::GRAPH_NODE, Val::Bytes(_)) => {
                let k = node_k;
                node_k += 1;
                if drop.contains(&k) {
                    continue;
                }
                match new_nodes.get(&k) {
                    Some((_, b)) => put_bytes(&mut body, field::GRAPH_NODE, b),
                    None => body.extend_from_slice(raw),
                }
            }
            (field::GRAPH_INITIALIZER, Val::Bytes(_)) => {
                let Some(name) = init_names.next() else {
                    continue;
                };
                if !used.contains(name) {
                    continue;
                }
                match (rescaled.get(name), inits.get(name)) {
                    (
                        Some(scale),
                        Some(Tensor {
                            data: Some(data),
                            dims,
                            ..
                        }),
                    ) => put_scaled_tensor(&mut body, name, dims, data, scale),
                    _ => body.extend_from_slice(raw),
                }
            }
            (field::GRAPH_OUTPUT, _) => {}
            _ => body.extend_from_slice(raw),
        }
    }
    for t in &added_inits {
        put_bytes(&mut body, field::GRAPH_INITIALIZER, t);
    }
    let mut vi = Vec::new();
    put_bytes(&mut vi, field::VALUE_INFO_NAME, x_name.as_bytes());
    put_bytes(
        &mut vi,
        field::VALUE_INFO_TYPE,
        &float_matrix_type(1, input),
    );
    put_bytes(&mut body, field::GRAPH_OUTPUT, &vi);
    let mut tag = Vec::with_capacity(ROOM);
    put_varint(&mut tag, u64::from(field::MODEL_GRAPH) << 3 | 2);
    put_varint(&mut tag, (body.len() - mark - ROOM) as u64);
    body.drain(mark..mark + ROOM - tag.len());
    body[mark..mark + tag.len()].copy_from_slice(&tag);
    Ok(Split { body, head, folded })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip_and_truncation_is_an_error() {
        for v in [0u64, 1, 127, 128, 300, 1 << 35, u64::MAX] {
            let mut b = Vec::new();
            put_varint(&mut b, v);
            let mut p = 0;
            assert_eq!(varint(&b, &mut p), Ok(v));
            assert_eq!(p, b.len());
            let mut p = 0;
            assert_eq!(varint(&b[..b.len() - 1], &mut p), Err(OnnxError::Truncated));
        }
    }

    #[test]
    fn fields_are_read_back_with_their_own_bytes_and_bad_data_is_refused() {
        let mut m = Vec::new();
        put_int(&mut m, 3, 150);
        put_bytes(&mut m, 9, b"abc");
        m.extend_from_slice(&[(4 << 3) | 5, 1, 0, 0, 0]);
        let f = fields(&m).unwrap();
        assert_eq!(f.len(), 3);
        assert_eq!((f[0].0, f[0].1), (3, Val::Varint(150)));
        assert_eq!((f[1].0, f[1].1), (9, Val::Bytes(b"abc")));
        assert_eq!((f[2].0, f[2].1), (4, Val::Fixed32(1)));
        assert_eq!(f.iter().map(|x| x.2.len()).sum::<usize>(), m.len());
        assert_eq!(fields(&m[..m.len() - 2]), Err(OnnxError::Truncated));
        // A length past the end, and a group (wire type 3).
        assert_eq!(fields(&[(1 << 3) | 2, 9, 1]), Err(OnnxError::Truncated));
        assert_eq!(fields(&[(1 << 3) | 3]), Err(OnnxError::WireType(3)));
        assert!(matches!(
            split_sface(b"\x0a\x02ab"),
            Err(OnnxError::Shape(_))
        ));
    }

    /// Weights made the way OpenCV Zoo's file was: (q - zero) * scale in float32.
    fn dequantized(q: &[i8], zero: i8, scale: f32) -> Vec<f32> {
        q.iter()
            .map(|&v| (f32::from(v) - f32::from(zero)) * scale)
            .collect()
    }

    #[test]
    fn int8_blocks_are_recovered_bit_for_bit_and_other_floats_are_not_taken_for_them() {
        let mut q: Vec<i8> = (0..BLOCK).map(|i| ((i * 37) % 256) as u8 as i8).collect();
        q[0] = -128;
        q[1] = 127;
        let w = dequantized(&q, -97, 0.000_731_5);
        let (bq, z, s) = recover_block(&w).expect("a dequantized block");
        assert_eq!(dequantized(&bq, 0, 1.0).len(), BLOCK);
        let back: Vec<f32> = bq.iter().map(|&v| (f32::from(v) - z) * s).collect();
        assert_eq!(
            back.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
            w.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
        );
        // A block whose rounding missed one end (254 steps) is recovered too.
        let mut q2 = q.clone();
        q2[1] = 126;
        q2.iter_mut().filter(|v| **v == 127).for_each(|v| *v = 126);
        let w2 = dequantized(&q2, 5, 0.01);
        let (bq2, z2, s2) = recover_block(&w2).expect("254 steps");
        assert!(bq2
            .iter()
            .zip(&w2)
            .all(|(&v, &x)| (f32::from(v) - z2) * s2 == x));
        // Ordinary floats are not int8 blocks: kept as floats.
        let f: Vec<f32> = (0..BLOCK).map(|i| (i as f32 * 0.37).sin() * 0.01).collect();
        assert_eq!(recover_block(&f), None);
        let bytes: Vec<u8> = f.iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(Weights::from_le_bytes(&bytes), Weights::Plain(f.clone()));
        let bytes: Vec<u8> = w.iter().flat_map(|v| v.to_le_bytes()).collect();
        assert!(matches!(
            Weights::from_le_bytes(&bytes),
            Weights::Blocks { .. }
        ));
        // A constant block.
        assert!(recover_block(&[0.5; BLOCK]).is_some());
        assert!(recover_block(&[f32::NAN; BLOCK]).is_none());
    }

    fn node(op: &str, inputs: &[&str], outputs: &[&str], attrs: &[(&str, Val)]) -> Vec<u8> {
        let mut n = Vec::new();
        for i in inputs {
            put_bytes(&mut n, field::NODE_INPUT, i.as_bytes());
        }
        for o in outputs {
            put_bytes(&mut n, field::NODE_OUTPUT, o.as_bytes());
        }
        put_bytes(&mut n, field::NODE_OP_TYPE, op.as_bytes());
        for (name, v) in attrs {
            let mut a = Vec::new();
            put_bytes(&mut a, field::ATTR_NAME, name.as_bytes());
            match v {
                Val::Fixed32(f) => {
                    put_varint(&mut a, u64::from(field::ATTR_F) << 3 | 5);
                    a.extend_from_slice(&f.to_le_bytes());
                }
                Val::Varint(i) => put_int(&mut a, field::ATTR_I, *i as i64),
                _ => unreachable!(),
            }
            put_bytes(&mut n, field::NODE_ATTRIBUTE, &a);
        }
        n
    }

    /// x -> Conv (2 channels, 1x1, no bias) -> BatchNormalization -> Flatten ->
    /// Gemm (3 x 128, int8 blocks) -> BatchNormalization -> y, as ONNX bytes.
    fn small_model() -> (Vec<u8>, Vec<f32>) {
        let mut g = Vec::new();
        let eps = |e: f32| ("epsilon", Val::Fixed32(e.to_bits()));
        for n in [
            node("Conv", &["x", "w1"], &["c1"], &[]),
            node(
                "BatchNormalization",
                &["c1", "g1", "b1", "m1", "v1"],
                &["n1"],
                &[eps(1e-3)],
            ),
            node("Flatten", &["n1"], &["f"], &[]),
            node(
                "Gemm",
                &["f", "wg", "bg"],
                &["h"],
                &[("transB", Val::Varint(1))],
            ),
            node(
                "BatchNormalization",
                &["h", "g2", "b2", "m2", "v2"],
                &["y"],
                &[eps(2e-5)],
            ),
        ] {
            put_bytes(&mut g, field::GRAPH_NODE, &n);
        }
        let q: Vec<i8> = (0..3 * 128)
            .map(|i| ((i * 53 + 11) % 256) as u8 as i8)
            .collect();
        let mut wg = Vec::new();
        for (b, chunk) in q.chunks(BLOCK).enumerate() {
            wg.extend(dequantized(chunk, (b as i8) * 7, 0.002 / (b + 1) as f32));
        }
        for (name, dims, v) in [
            ("w1", vec![2i64, 1, 1, 1], vec![0.5f32, -2.0]),
            ("g1", vec![2], vec![1.5, 0.5]),
            ("b1", vec![2], vec![0.1, -0.2]),
            ("m1", vec![2], vec![0.3, 0.0]),
            ("v1", vec![2], vec![4.0, 1.0]),
            ("wg", vec![3, 128], wg.clone()),
            ("bg", vec![3], vec![0.0, 1.0, 2.0]),
            ("g2", vec![3], vec![1.0; 3]),
            ("b2", vec![3], vec![0.0; 3]),
            ("m2", vec![3], vec![0.0; 3]),
            ("v2", vec![3], vec![1.0; 3]),
        ] {
            put_bytes(
                &mut g,
                field::GRAPH_INITIALIZER,
                &encode_tensor(name, &dims, &v),
            );
        }
        let mut out = Vec::new();
        put_bytes(&mut out, field::VALUE_INFO_NAME, b"y");
        put_bytes(&mut g, field::GRAPH_OUTPUT, &out);
        let mut m = Vec::new();
        put_int(&mut m, 1, 6);
        put_bytes(&mut m, field::MODEL_GRAPH, &g);
        (m, wg)
    }

    #[test]
    fn the_split_takes_the_head_out_and_folds_the_batch_norm_into_the_conv() {
        let (model, wg) = small_model();
        let split = split_sface(&model).unwrap();
        assert_eq!(split.folded, 1);
        assert!(split.head.quantized());
        assert_eq!((split.head.input_len(), split.head.output_len()), (128, 3));
        // The head computes the Gemm (the final normalization is the identity here).
        let x: Vec<f32> = (0..128).map(|i| i as f32 / 128.0).collect();
        let y = split.head.apply(&x).unwrap();
        let want: f32 = wg[..128].iter().zip(&x).map(|(w, x)| w * x).sum();
        assert!((y[0] - want).abs() < 1e-4, "{} vs {want}", y[0]);
        // The body: Conv (now writing the normalization's output, with a bias) and Flatten.
        let top = fields(&split.body).unwrap();
        assert_eq!(top[0].1, Val::Varint(6), "the model's other fields kept");
        let Some((_, Val::Bytes(g), _)) = top.iter().find(|f| f.0 == field::MODEL_GRAPH) else {
            panic!("no graph");
        };
        let mut ops = Vec::new();
        let mut inits = HashMap::new();
        let mut outputs = Vec::new();
        for (f, v, _) in fields(g).unwrap() {
            match (f, v) {
                (field::GRAPH_NODE, Val::Bytes(b)) => {
                    let n = Node::parse(b).unwrap();
                    ops.push((n.op.to_owned(), n.inputs.len(), n.outputs.clone().join(",")));
                }
                (field::GRAPH_INITIALIZER, Val::Bytes(b)) => {
                    let (name, t) = Tensor::parse(b).unwrap();
                    let n = t.len();
                    inits.insert(name.to_owned(), t.floats(name, n).unwrap());
                }
                (field::GRAPH_OUTPUT, Val::Bytes(b)) => outputs.push(b.to_vec()),
                _ => {}
            }
        }
        assert_eq!(
            ops,
            [
                ("Conv".into(), 3, "n1".into()),
                ("Flatten".into(), 1, "f".into())
            ]
        );
        let mut names: Vec<&String> = inits.keys().collect();
        names.sort();
        assert_eq!(names, ["w1", "w1_bn_folded_bias"]);
        // scale = gamma / sqrt(var + eps), shift = beta - scale * mean.
        let s = [1.5 / (4.0f32 + 1e-3).sqrt(), 0.5 / (1.0f32 + 1e-3).sqrt()];
        assert_eq!(inits["w1"], [0.5 * s[0], -2.0 * s[1]]);
        assert_eq!(
            inits["w1_bn_folded_bias"],
            [0.1 - s[0] * 0.3, -0.2 - s[1] * 0.0]
        );
        assert_eq!(outputs.len(), 1);
        assert!(fields(&outputs[0]).unwrap()[0].1 == Val::Bytes(b"f"));
    }

    #[test]
    fn a_damaged_model_is_an_error_never_a_panic() {
        let (model, _) = small_model();
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut refused = 0;
        for _ in 0..3000 {
            let mut m = model.clone();
            match next() % 3 {
                0 => m.truncate((next() as usize) % m.len()),
                1 => {
                    for _ in 0..1 + next() % 4 {
                        let i = (next() as usize) % m.len();
                        m[i] ^= 1 << (next() % 8);
                    }
                }
                _ => {
                    let i = (next() as usize) % m.len();
                    m[i] = 0xff;
                }
            }
            if split_sface(&m).is_err() {
                refused += 1;
            }
        }
        assert!(refused > 1000, "most damage is noticed: {refused} of 3000");
    }

    #[test]
    fn the_head_computes_the_same_in_blocks_and_in_floats() {
        let (input, out) = (2 * BLOCK, 3);
        let q: Vec<i8> = (0..input * out)
            .map(|i| ((i * 91 + 7) % 256) as u8 as i8)
            .collect();
        let mut w = Vec::new();
        for (b, chunk) in q.chunks(BLOCK).enumerate() {
            w.extend(dequantized(
                chunk,
                (b as i8).wrapping_mul(3),
                0.001 * (b + 1) as f32,
            ));
        }
        let bytes: Vec<u8> = w.iter().flat_map(|v| v.to_le_bytes()).collect();
        let make = |weights| Head {
            input,
            weights,
            bias: vec![0.5, -0.25, 0.0],
            bn_scale: vec![2.0, 1.0, 0.5],
            bn_shift: vec![0.0, 1.0, -1.0],
        };
        let blocks = make(Weights::from_le_bytes(&bytes));
        assert!(blocks.quantized());
        let plain = make(Weights::Plain(w.clone()));
        let x: Vec<f32> = (0..input).map(|i| (i as f32 * 0.1).cos()).collect();
        let (a, b) = (blocks.apply(&x).unwrap(), plain.apply(&x).unwrap());
        assert_eq!(a, b, "the same weights in the same order");
        // And what it computes: y = (W x + b) * scale + shift.
        for o in 0..out {
            let dot: f64 = (0..input)
                .map(|i| f64::from(w[o * input + i]) * f64::from(x[i]))
                .sum();
            let want = (dot + f64::from(plain.bias[o])) * f64::from(plain.bn_scale[o])
                + f64::from(plain.bn_shift[o]);
            assert!(
                (f64::from(a[o]) - want).abs() < 1e-4,
                "{o}: {} vs {want}",
                a[o]
            );
        }
        assert_eq!(blocks.apply(&x[1..]), None);
        assert!(blocks.weight_bytes() < plain.weight_bytes() / 3);
    }
}
