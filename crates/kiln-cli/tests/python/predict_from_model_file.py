"""`kiln predict MODEL --input CSV --format json` for a tabular model, from the model file
alone, as the README's "The model file" section describes the file.

    python predict_from_model_file.py MODEL.safetensors ROWS.csv

prints, as kiln does, a JSON list with one {"class", "probabilities", "row"} per row (the
same values; Python writes some numbers differently, 1e-09 for 1e-9). Needs only
safetensors, numpy and the standard library; each step names the README paragraph it
follows. It covers what a tabular model
file can hold: numeric and categorical columns, gaps, outlier bounds, every
normalization, every layer kind and activation, float32/float16/bfloat16 weights, pruned
(sparse) kernels, int8 models whose products are all Dense layers (static and dynamic),
and bagged ensembles. Anything else (a model without `kiln.table`, a language model, an
int8 convolution) is refused with an error, never answered with made-up numbers.
"""

import csv
import gzip
import io
import json
import math
import re
import struct
import sys

import numpy as np
from safetensors import safe_open

F32 = np.float32

# Cells that mean "no value" (README: Tabular data).
MISSING = {"", "NA", "N/A", "NaN", "nan", "null", "NULL", "None", "?"}
# A number as Rust's `str::parse::<f64>()` / `::<f32>()` accepts it.
NUMBER = re.compile(
    r"[+-]?(?:(?i:inf|infinity|nan)|(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)"
)
# Rows looked at when deciding whether a prediction file's first line is a header.
HEADER_SNIFF_ROWS = 100


class Refused(Exception):
    """What this re-implementation does not do, or a file kiln would refuse too."""


# ---------------------------------------------------------------------------------------
# The file: metadata and tensors


def read_header(path):
    with open(path, "rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        return json.loads(f.read(length)), 8 + length


def read_tensors(path):
    """Every tensor as a numpy array: F32, F16 and BF16 widened to float32; I8, U8 as is."""
    header, data_start = read_header(path)
    tensors = {}
    with safe_open(path, "np") as f:
        for name in f.keys():
            dtype = header[name]["dtype"]
            if dtype == "BF16":
                # numpy has no bfloat16: the top half of a float32's bits.
                start, end = header[name]["data_offsets"]
                with open(path, "rb") as raw:
                    raw.seek(data_start + start)
                    bits = np.frombuffer(raw.read(end - start), dtype="<u2").astype(np.uint32)
                value = (bits << 16).view(np.float32).reshape(header[name]["shape"])
            else:
                value = f.get_tensor(name)
            if dtype in ("F32", "F16", "BF16"):
                value = value.astype(F32)
            elif dtype not in ("I8", "U8"):
                raise Refused(f"tensor {name} is {dtype}, which kiln does not write")
            tensors[name] = value
        metadata = f.metadata()
    return metadata, tensors


def expand_bitmap(bitmap, values, shape):
    """A sparse kernel: bit i % 8 of byte i / 8 marks weight i (row-major) as stored."""
    count = int(np.prod(shape))
    marks = np.unpackbits(bitmap, bitorder="little")[:count].astype(bool)
    if marks.sum() != values.size:
        raise Refused(f"the bitmap marks {marks.sum()} weights, {values.size} values are stored")
    dense = np.zeros(count, dtype=values.dtype)
    dense[marks] = values
    return dense.reshape(shape)


class Model:
    def __init__(self, path):
        meta, self.tensors = read_tensors(path)
        if meta.get("format") != "kiln":
            raise Refused("not a kiln model: no `format: kiln` in its metadata")
        if int(meta.get("format_version", "1")) > 1:
            raise Refused(f"format_version {meta['format_version']}: newer than this reader")
        kind = meta.get("kiln.kind", "gpt" if "kiln.lm" in meta else "sequential")
        if kind != "sequential":
            raise Refused(f"a `{kind}` model; this script predicts with layer-stack models")
        self.meta = meta
        self.architecture = json.loads(meta["kiln.architecture"])
        self.preprocessing = json.loads(meta["kiln.preprocessing"])
        self.classes = json.loads(meta["kiln.classes"])
        self.training = json.loads(meta.get("kiln.training", "null"))
        if "kiln.table" not in meta:
            raise Refused("the model has no `kiln.table`: not a tabular model")
        self.table = json.loads(meta["kiln.table"])
        self.compression = json.loads(meta["kiln.compression"]) if "kiln.compression" in meta else None
        self.sparse = set(json.loads(meta.get("kiln.sparse", "[]")))
        self.sparse_int8 = set(json.loads(meta.get("kiln.sparse_int8", "[]")))
        lineage = json.loads(meta.get("kiln.lineage", "null")) or {}
        ensemble = lineage.get("ensemble")
        self.members = ensemble["members"] if ensemble else 1
        if self.compression and self.members > 1:
            raise Refused("an int8 ensemble, which kiln refuses too")
        # Quantized layer index -> its input's u8 map (None: each vector's own range).
        self.int8_layers = {index: mapping for index, mapping in (self.compression or {}).get("inputs", [])}
        self.shapes = layer_shapes(self.architecture)

    def float_tensor(self, name):
        if name in self.sparse:
            values = self.tensors[name + ".values"]
            return expand_bitmap(self.tensors[name + ".bitmap"], values, self.kernel_shape(name))
        return self.tensors[name]

    def kernel_shape(self, name):
        # A sparse kernel's shape is not stored; it follows from the architecture.
        index = int(name.split(".")[1])
        shape = self.shapes[index]
        layer = self.architecture["layers"][index]
        if layer["type"] == "dense":
            return (shape[-1], layer["units"])
        kh, kw = pair(layer["kernel_size"])
        return (kh, kw, shape[-1], layer["filters"])

    def int8_kernel(self, name):
        """(codes as int64, one scale per output column)."""
        if name in self.sparse_int8:
            codes = expand_bitmap(
                self.tensors[name + ".bitmap"], self.tensors[name + ".values"], self.kernel_shape(name)
            )
        else:
            codes = self.tensors[name]
        return codes.astype(np.int64), self.tensors[name + "_scale"]


# ---------------------------------------------------------------------------------------
# The CSV: kiln's reading of prediction rows


def is_number(cell):
    return NUMBER.fullmatch(cell) is not None


def read_rows(path):
    """README, `kiln.table`, step 1: the file's rows of trimmed cells, blank rows skipped."""
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    text = raw.decode("utf-8")
    if text.startswith("\ufeff"):
        text = text[1:]
    rows = []
    for record in csv.reader(io.StringIO(text, newline="")):
        cells = [c.strip(" \t\r\n\x0c") for c in record]
        if all(c == "" for c in cells):
            continue
        rows.append(cells)
    if not rows:
        raise Refused(f"{path}: is empty: no rows")
    if any(len(r) != len(rows[0]) for r in rows):
        raise Refused(f"{path}: rows of different widths")
    return rows


def looks_like_header(rows):
    """README, `kiln.table`, step 2: whether a first row (of several) looks like a header."""
    first, body = rows[0], rows[1 : HEADER_SNIFF_ROWS + 1]
    if not body:
        return any(c not in MISSING and not is_number(c) for c in first)
    numeric = [c for c in range(len(first)) if all(r[c] in MISSING or is_number(r[c]) for r in body)]
    if any(first[c] not in MISSING and not is_number(first[c]) for c in numeric):
        return True
    return not numeric and all(
        cell not in MISSING and all(r[c] != cell for r in body) for c, cell in enumerate(first)
    )


def raw_features(table, path):
    """README, `kiln.table`, steps 1-3: one value per feature column and row, the number, the
    category's index (the category count for one not seen in training), or NaN for a gap."""
    schema = table["schema"]
    columns = schema["columns"]
    names = [c["name"] for c in columns]
    rows = read_rows(path)
    first = rows[0]
    if schema["has_header"] and (
        all(n in first for n in names) or (len(rows) > 1 and looks_like_header(rows))
    ):
        header, rows = rows[0], rows[1:]
        if not rows:
            raise Refused(f"{path}: has a header but no data rows")
        if "" in header or len(set(header)) != len(header):
            raise Refused(f"{path}: a header with an empty or repeated name")
        missing = [n for n in names if n not in header]
        if missing:
            raise Refused(f"{path}: feature column {missing[0]!r} does not exist")
        positions = [header.index(n) for n in names]
    elif len(first) == len(columns):
        positions = list(range(len(columns)))
    else:
        raise Refused(f"{path}: {len(first)} columns and no header, expected {len(columns)}")
    out = np.empty((len(rows), len(columns)), dtype=F32)
    for r, cells in enumerate(rows):
        for c, (at, column) in enumerate(zip(positions, columns)):
            cell = cells[at]
            if cell in MISSING:
                out[r, c] = np.nan
            elif column["kind"] == "numeric":
                value = F32(float(cell)) if is_number(cell) else F32(np.nan)
                if not np.isfinite(value):
                    raise Refused(f"row {r + 1}, column {column['name']!r}: {cell!r} is not a finite number")
                out[r, c] = value
            elif column["kind"] == "categorical":
                categories = column["categories"]
                out[r, c] = categories.index(cell) if cell in categories else len(categories)
            else:
                raise Refused(f"column kind {column['kind']!r}")
    return out


def clean(table, x):
    """README, `kiln.table`, steps 4-5: outliers clipped to their bounds (action clip; left as
    they are with drop), then gaps filled with the column's fill value (an error without one)."""
    cleaning = table["cleaning"]
    bounds = cleaning.get("bounds", [])
    clip = cleaning.get("outlier_action", "clip") == "clip"
    for c, bound in enumerate(bounds):
        if bound is not None and clip:
            low, high = F32(bound[0]), F32(bound[1])
            column = x[:, c]
            present = ~np.isnan(column)
            column[present] = np.clip(column[present], low, high)
    gaps = np.isnan(x)
    if gaps.any():
        missing = cleaning.get("missing")
        if missing in (None, "drop"):
            row, column = np.argwhere(gaps)[0]
            raise Refused(f"row {row + 1}, column {column + 1}: a gap, and the model has no fill values")
        fill = np.asarray(cleaning.get("fill", []), dtype=F32)
        if fill.shape != (x.shape[1],):
            raise Refused(f"kiln.table.cleaning.fill holds {fill.size} values for {x.shape[1]} columns")
        x[gaps] = np.broadcast_to(fill, x.shape)[gaps]
    return x


def one_hot(table, x):
    """README, `kiln.table`, step 6."""
    parts = []
    for c, column in enumerate(table["schema"]["columns"]):
        if column["kind"] == "numeric":
            parts.append(x[:, c : c + 1])
        else:
            n = len(column["categories"])
            index = x[:, c].astype(np.int64)
            parts.append((index[:, None] == np.arange(n)[None, :]).astype(F32))
    return np.concatenate(parts, axis=1)


def normalize(p, x):
    """README, `kiln.preprocessing`: in float32, no epsilon."""
    kind = p["kind"]
    if kind == "none":
        return x
    if kind == "scale":
        return x / F32(p["max"])
    shift, divisor = {"z_score": ("mean", "std"), "min_max": ("min", "range")}.get(kind, (None, None))
    if shift is None:
        raise Refused(f"normalization kind {kind!r}")
    shift, divisor = np.asarray(p[shift], F32), np.asarray(p[divisor], F32)
    if shift.shape != (x.shape[1],) or divisor.shape != (x.shape[1],):
        raise Refused(f"kiln.preprocessing holds {shift.size} values for {x.shape[1]} inputs")
    return (x - shift) / divisor


# ---------------------------------------------------------------------------------------
# The layers (float32 values; products summed in float64)


def pair(v):
    return (v, v) if isinstance(v, int) else (v[0], v[1])


def activate(name, x):
    """README, The forward pass: activations."""
    x = x.astype(F32)
    if name == "linear":
        return x
    if name == "relu":
        return np.where(x < 0, F32(0), x)
    if name == "leaky_relu":
        return np.where(x > 0, x, F32(0.2) * x)
    if name == "sigmoid":
        with np.errstate(over="ignore"):
            e = np.exp(np.minimum(x, 0))
            return np.where(x >= 0, F32(1) / (F32(1) + np.exp(-np.maximum(x, 0))), e / (F32(1) + e))
    if name == "tanh":
        return np.tanh(x)
    if name == "gelu":
        v = x.astype(np.float64)
        erf = np.vectorize(math.erf)(v / math.sqrt(2.0)) if v.size else v
        return (v * 0.5 * (1.0 + erf)).astype(F32)
    if name in ("softmax", "log_softmax"):
        shifted = x - x.max(axis=-1, keepdims=True)
        e = np.exp(shifted.astype(np.float64))
        if name == "softmax":
            return (e / e.sum(axis=-1, keepdims=True)).astype(F32)
        return (shifted - np.log(e.sum(axis=-1, keepdims=True))).astype(F32)
    raise Refused(f"activation {name!r}")


def axis_geometry(n, k, stride, dilation, padding):
    """TensorFlow's output size and padding before, for one axis."""
    span = (k - 1) * dilation + 1
    if padding == "valid":
        if n < span:
            raise Refused("a window larger than its input")
        return (n - span) // stride + 1, 0
    out = -(-n // stride)
    return out, max((out - 1) * stride + span - n, 0) // 2


def windows(x, size, strides, dilation, padding, fill):
    """(B, OH, OW, taps, C): every window's values, `fill` where it leaves the image."""
    b, h, w, c = x.shape
    (kh, kw), (sh, sw), (dh, dw) = size, strides, dilation
    oh, ph = axis_geometry(h, kh, sh, dh, padding)
    ow, pw = axis_geometry(w, kw, sw, dw, padding)
    padded = np.full((b, h + 2 * ph + kh * dh + sh * oh, w + 2 * pw + kw * dw + sw * ow, c), fill, x.dtype)
    padded[:, ph : ph + h, pw : pw + w, :] = x
    taps = [
        padded[:, i * dh : i * dh + sh * oh : sh, j * dw : j * dw + sw * ow : sw, :]
        for i in range(kh)
        for j in range(kw)
    ]
    return np.stack(taps, axis=3)


def batch_norm(model, prefix, layer, x):
    t = model.tensors
    c = x.shape[-1]
    gamma = t[prefix + "gamma"] if layer.get("scale", True) else np.ones(c, F32)
    beta = t[prefix + "beta"] if layer.get("center", True) else np.zeros(c, F32)
    scale = gamma / np.sqrt(t[prefix + "moving_variance"] + F32(layer.get("epsilon", 1e-3)))
    shift = beta - t[prefix + "moving_mean"] * scale
    return x * scale + shift


def forward_float(model, prefix, layers, x, first=0):
    """README, The forward pass: `layers` (the model's from index `first` on) on `x`; `prefix`
    picks an ensemble member."""
    for i, layer in enumerate(layers, start=first):
        kind, p = layer["type"], f"{prefix}layers.{i}."
        if kind == "dense":
            y = x.astype(np.float64) @ model.float_tensor(p + "kernel").astype(np.float64)
            if layer.get("use_bias", True):
                y = y + model.tensors[p + "bias"]
            x = activate(layer.get("activation", "linear"), y.astype(F32))
        elif kind == "dropout":
            pass
        elif kind == "flatten":
            x = x.reshape(x.shape[0], -1)
        elif kind == "reshape":
            x = x.reshape((x.shape[0], *layer["target_shape"]))
        elif kind == "activation":
            x = activate(layer["activation"], x)
        elif kind == "batch_normalization":
            x = batch_norm(model, p, layer, x)
        elif kind == "conv2d":
            kernel = model.float_tensor(p + "kernel").astype(np.float64)
            taps = windows(
                x.astype(np.float64),
                pair(layer["kernel_size"]),
                pair(layer.get("strides", 1)),
                pair(layer.get("dilation_rate", 1)),
                layer.get("padding", "valid"),
                0.0,
            )
            y = np.einsum("bhwtc,tcf->bhwf", taps, kernel.reshape(-1, kernel.shape[2], kernel.shape[3]))
            if layer.get("use_bias", True):
                y = y + model.tensors[p + "bias"]
            x = activate(layer.get("activation", "linear"), y.astype(F32))
        elif kind in ("max_pooling2d", "average_pooling2d"):
            size = pair(layer.get("pool_size", 2))
            args = (size, pair(layer.get("strides", size)), (1, 1), layer.get("padding", "valid"))
            if kind == "max_pooling2d":
                x = windows(x, *args, -np.inf).max(axis=3)
            else:
                values = windows(x.astype(np.float64), *args, 0.0).sum(axis=3)
                counts = windows(np.ones(x.shape[:3] + (1,)), *args, 0.0).sum(axis=3)
                x = (values / counts).astype(F32)
        elif kind == "global_average_pooling2d":
            x = x.astype(np.float64).mean(axis=(1, 2)).astype(F32)
        else:
            raise Refused(f"layer type {kind!r}")
    return x


# ---------------------------------------------------------------------------------------
# int8: u8 activation codes times i8 kernel codes, summed exactly


def covering(low, high):
    """README, int8: (scale, zero point) of a dynamic input's u8 map, the range widened to 0."""
    low, high = min(F32(low), F32(0)), max(F32(high), F32(0))
    if not (high > low and np.isfinite(low) and np.isfinite(high)):
        return F32(1), 0
    scale = F32(high - low) / F32(255)
    z = -low / scale
    zero = math.floor(z) + (1 if z - math.floor(z) >= 0.5 else 0)  # half away from zero
    return F32(scale), min(max(zero, 0), 255)


def quantize(x, scale, zero):
    v = x * (F32(1) / scale) + (F32(zero) + F32(0.5))
    return np.trunc(np.nan_to_num(np.clip(v, 0, 255), nan=0.0)).astype(np.int64)


def dense_int8(model, i, layer, x):
    """README, int8: Dense layer `i` on u8 codes of its input and its i8 kernel codes."""
    name = f"layers.{i}.kernel"
    codes, scales = model.int8_kernel(name)
    k = codes.shape[0]
    rows = x.reshape(-1, k)
    mapping = model.int8_layers[i]
    if mapping is not None:
        maps = [(F32(mapping["scale"]), int(mapping["zero_point"]))] * len(rows)
    else:  # dynamic: each row its own range
        maps = [covering(r.min(), r.max()) for r in rows]
    out = np.empty((len(rows), codes.shape[1]), F32)
    column_sums = codes.sum(axis=0)
    for r, (row, (scale, zero)) in enumerate(zip(rows, maps)):
        sums = quantize(row, scale, zero) @ codes
        out[r] = (sums - zero * column_sums).astype(F32) * (scale * scales) + (
            model.tensors[f"layers.{i}.bias"] if layer.get("use_bias", True) else F32(0)
        )
    activation = layer.get("activation", "linear")
    if activation == "sigmoid":  # as kiln's int8 path computes it
        with np.errstate(over="ignore"):
            out = F32(1) / (F32(1) + np.exp(-out))
    else:
        out = activate(activation, out)
    return out.reshape(x.shape[:-1] + (codes.shape[1],))


def forward_int8(model, layers, x):
    for i, layer in enumerate(layers):
        if i in model.int8_layers:
            if layer["type"] != "dense":
                raise Refused("an int8 Conv2D layer: not implemented by this script")
            x = dense_int8(model, i, layer, x)
        elif layer["type"] in ("dense", "conv2d", "max_pooling2d", "average_pooling2d"):
            raise Refused(f"an int8 model with a float {layer['type']} layer: not implemented by this script")
        else:
            x = forward_float(model, "", [layer], x, first=i)
    return x


def layer_shapes(architecture):
    """Each layer's input shape (one sample), to size sparse kernels."""
    shape = list(architecture["input_shape"])
    shapes = []
    for layer in architecture["layers"]:
        shapes.append(shape)
        kind = layer["type"]
        if kind == "dense":
            shape = shape[:-1] + [layer["units"]]
        elif kind == "flatten":
            shape = [int(np.prod(shape))]
        elif kind == "reshape":
            target = layer["target_shape"]
            known = int(np.prod([d for d in target if d != -1]))
            shape = [int(np.prod(shape)) // known if d == -1 else d for d in target]
        elif kind in ("conv2d", "max_pooling2d", "average_pooling2d"):
            h, w, c = shape
            conv = kind == "conv2d"
            size = pair(layer["kernel_size"] if conv else layer.get("pool_size", 2))
            strides = pair(layer.get("strides", 1 if conv else size))
            dilation = pair(layer.get("dilation_rate", 1)) if conv else (1, 1)
            padding = layer.get("padding", "valid")
            oh = axis_geometry(h, size[0], strides[0], dilation[0], padding)[0]
            ow = axis_geometry(w, size[1], strides[1], dilation[1], padding)[0]
            shape = [oh, ow, layer["filters"] if conv else c]
        elif kind == "global_average_pooling2d":
            shape = [shape[-1]]
    return shapes


def predict(model_path, csv_path):
    model = Model(model_path)
    x = raw_features(model.table, csv_path)
    x = clean(model.table, x)
    x = one_hot(model.table, x)
    x = normalize(model.preprocessing, x)
    x = x.reshape((len(x), *model.architecture["input_shape"]))
    layers = model.architecture["layers"]
    if model.compression:
        y = forward_int8(model, layers, x)
    else:
        outputs = [forward_float(model, "", layers, x)]
        outputs += [forward_float(model, f"members.{m}.", layers, x) for m in range(1, model.members)]
        y = outputs[0]
        for other in outputs[1:]:
            y = y + other
        y = y / F32(model.members)
    y = y.reshape(len(x), -1).astype(F32)
    result = []
    from_logits = bool(model.training and model.training.get("from_logits"))
    for r, p in enumerate(y):
        if len(p) == 1:
            # One output: class 1's probability (the sigmoid of a logit), class 1 above 0.5.
            probability = 1.0 / (1.0 + np.exp(-float(p[0]))) if from_logits else float(p[0])
            best = 1 if probability > 0.5 else 0
        else:
            best = 0
            for j in range(len(p)):
                if p[j] > p[best]:
                    best = j
        name = model.classes[best] if best < len(model.classes) else str(best)
        probabilities = [float(v) if np.isfinite(v) else None for v in p]
        result.append({"class": name, "probabilities": probabilities, "row": r})
    return result


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: predict_from_model_file.py MODEL.safetensors ROWS.csv")
    try:
        rows = predict(sys.argv[1], sys.argv[2])
    except Refused as e:
        sys.exit(f"error: {e}")
    print(json.dumps(rows, indent=2, sort_keys=True))


if __name__ == "__main__":
    main()
