"""Checks an ONNX file kiln exported and runs it on the samples of an input file.

    python run_onnx.py MODEL.onnx INPUT

`onnx.checker.check_model(full_check=True)` must pass (it also infers every value's shape).
INPUT is what `kiln predict --input` reads: an IDX file (gzip-compressed or not) or a CSV
of numbers, one sample per row (a header row is skipped). Prints one JSON object:
{"ops": {op_type: count}, "opset": N, "metadata": {...}, "probabilities": [[...]],
"class": [...], "unfused_probabilities": [[...]]}: the outputs as ONNX Runtime gives them
by default, and the probabilities with its graph optimizations off, i.e. every node run as
written (QDQ pairs not fused into its own integer kernels, which round differently).
Needs numpy, onnx and onnxruntime.
"""

import collections
import gzip
import json
import sys

import numpy as np
import onnx
import onnxruntime


def read_idx(path):
    opener = gzip.open if open(path, "rb").read(2) == b"\x1f\x8b" else open
    with opener(path, "rb") as f:
        raw = f.read()
    rank = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(rank)]
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * rank)
    return data.reshape(dims).astype(np.float32)


def read_samples(path):
    if open(path, "rb").read(2) in (b"\x1f\x8b", b"\x00\x00"):
        return read_idx(path)
    rows = []
    for line in open(path, encoding="utf-8"):
        cells = [c.strip() for c in line.strip().split(",")]
        if not line.strip():
            continue
        try:
            rows.append([float(c) for c in cells])
        except ValueError:
            if rows:
                raise
    return np.array(rows, dtype=np.float32)


def main():
    model_path, input_path = sys.argv[1], sys.argv[2]
    model = onnx.load(model_path)
    onnx.checker.check_model(model, full_check=True)
    session = onnxruntime.InferenceSession(model_path, providers=["CPUExecutionProvider"])
    (graph_input,) = session.get_inputs()
    sample_shape = [d for d in graph_input.shape[1:]]
    x = read_samples(input_path).reshape([-1] + sample_shape)
    probabilities, classes = session.run(["probabilities", "class"], {graph_input.name: x})
    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
    unfused = onnxruntime.InferenceSession(model_path, options, providers=["CPUExecutionProvider"])
    (unfused_probabilities,) = unfused.run(["probabilities"], {graph_input.name: x})
    print(
        json.dumps(
            {
                "ops": collections.Counter(n.op_type for n in model.graph.node),
                "opset": model.opset_import[0].version,
                "metadata": {p.key: p.value for p in model.metadata_props},
                "probabilities": probabilities.astype(float).tolist(),
                "class": classes.astype(int).tolist(),
                "unfused_probabilities": unfused_probabilities.astype(float).tolist(),
            }
        )
    )


if __name__ == "__main__":
    main()
