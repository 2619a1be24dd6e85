"""The usual Python alternative to `kiln serve`, for bench/serve.sh: FastAPI + uvicorn serving
the same kiln model in PyTorch, speaking the same Open Inference Protocol v2 subset
(POST /v2/models/NAME/infer with one FP32 input, raw values; answers probabilities and
class), with pydantic validating the request as a FastAPI user would write it.

    MODEL=path/model.safetensors NAME=mnist python -m uvicorn serve_fastapi:app --app-dir bench

The weights come from kiln's safetensors file (Dense kernels are [in, out], so nn.Linear
takes their transpose); the model's fitted `scale` normalization is applied as kiln does.
Only the layer kinds of the reference MLP (flatten, dense, dropout) are supported.
"""
import json
import os
from typing import List, Optional, Union

import torch
from fastapi import FastAPI, HTTPException
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from safetensors import safe_open
from torch import nn

NAME = os.environ.get("NAME", "mnist")
ACTIVATIONS = {"relu": nn.ReLU, "softmax": lambda: nn.Softmax(dim=1), "linear": nn.Identity}


def load(path):
    with safe_open(path, framework="pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    arch = json.loads(meta["kiln.architecture"])
    layers = [nn.Flatten()]
    for i, spec in enumerate(arch["layers"]):
        kind = spec["type"]
        if kind == "dense":
            kernel = tensors[f"layers.{i}.kernel"]
            linear = nn.Linear(kernel.shape[0], kernel.shape[1])
            linear.weight.data = kernel.t().contiguous()
            linear.bias.data = tensors[f"layers.{i}.bias"]
            layers += [linear, ACTIVATIONS[spec.get("activation", "linear").lower()]()]
        elif kind not in ("flatten", "dropout"):
            raise SystemExit(f"serve_fastapi.py: layer type {kind} is not supported")
    prep = json.loads(meta["kiln.preprocessing"])
    scale = float(prep["max"]) if prep.get("kind") == "scale" else 1.0
    classes = json.loads(meta["kiln.classes"])
    return nn.Sequential(*layers).eval(), arch["input_shape"], scale, classes


torch.set_flush_denormal(True)
if int(os.environ.get("WEB_CONCURRENCY", "1")) > 1:
    torch.set_num_threads(1)  # one process per core: avoid oversubscribing the cores
MODEL, INPUT_SHAPE, SCALE, CLASSES = load(os.environ["MODEL"])
SAMPLE = 1
for d in INPUT_SHAPE:
    SAMPLE *= d


class InferInput(BaseModel):
    name: str
    shape: List[int]
    datatype: str
    data: List[Union[float, List]]


class InferRequest(BaseModel):
    id: Optional[str] = None
    inputs: List[InferInput]


app = FastAPI()


@app.exception_handler(HTTPException)
async def error_body(_, exc):
    return JSONResponse(status_code=exc.status_code, content={"error": exc.detail})


@app.get("/v2/health/ready")
def ready():
    return {"ready": True}


@app.post("/v2/models/{name}/infer")
def infer(name: str, req: InferRequest):
    if name != NAME:
        raise HTTPException(404, f"unknown model `{name}`")
    if len(req.inputs) != 1 or req.inputs[0].datatype != "FP32":
        raise HTTPException(400, "expected one FP32 input")
    x = torch.tensor(req.inputs[0].data, dtype=torch.float32)
    rows = req.inputs[0].shape[0]
    if x.numel() != rows * SAMPLE or not torch.isfinite(x).all():
        raise HTTPException(400, "wrong shape or non-finite values")
    with torch.no_grad():
        probs = MODEL(x.reshape(rows, *INPUT_SHAPE) / SCALE)
    classes = [CLASSES[i] for i in probs.argmax(dim=1).tolist()]
    out = {"model_name": name, "outputs": [
        {"name": "probabilities", "datatype": "FP32", "shape": list(probs.shape), "data": probs.flatten().tolist()},
        {"name": "class", "datatype": "BYTES", "shape": [rows], "data": classes}]}
    if req.id is not None:
        out["id"] = req.id
    return out
