"""transformers' side of bench/gpt2.sh, on a GPT-2 checkpoint folder (made by
crates/kiln/tests/fixtures/gpt2-tiny/make_fixture.py --full DIR: the 124M architecture with
random weights). CPU, float32, eval mode for generation, denormals flushed, torch's default
thread count (one per core, as kiln's).

    python bench/hf_gpt2.py generate DIR IDS TOKENS   # greedy, KV cache, batch 1
    python bench/hf_gpt2.py logits DIR IDS OUT.f32     # every position's logits, raw f32
    python bench/hf_gpt2.py finetune DIR TEXT STEPS BATCH CONTEXT

IDS is comma-separated token ids. Prints one JSON line.
"""
import json
import sys
import time

import numpy as np
import torch
import transformers
from transformers import GPT2LMHeadModel, GPT2TokenizerFast

torch.set_flush_denormal(True)
PEER = f"transformers-{transformers.__version__}+torch-{torch.__version__}"


def load(folder):
    model = GPT2LMHeadModel.from_pretrained(folder, dtype=torch.float32)
    return model


def generate(folder, ids, tokens):
    model = load(folder).eval()
    prompt = torch.tensor([ids])
    with torch.no_grad():
        model.generate(prompt, max_new_tokens=2, min_new_tokens=2, do_sample=False, use_cache=True)
        start = time.perf_counter()
        out = model.generate(prompt, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False,
                             use_cache=True, pad_token_id=0)
        seconds = time.perf_counter() - start
    new = out[0, len(ids):].tolist()
    print(json.dumps({"peer": PEER, "tokens": len(new), "seconds": seconds,
                      "tokens_per_s": len(new) / seconds, "ids": new}))


def logits(folder, ids, out):
    model = load(folder).eval()
    with torch.no_grad():
        values = model(torch.tensor([ids])).logits[0].float().numpy()
    values.astype("<f4").tofile(out)
    print(json.dumps({"peer": PEER, "positions": len(ids), "vocab": values.shape[1]}))


def finetune(folder, text_path, steps, batch, context):
    model = load(folder).train()
    for module in model.modules():  # kiln's spec here has dropout 0
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    tokenizer = GPT2TokenizerFast.from_pretrained(folder)
    ids = torch.tensor(tokenizer(open(text_path, encoding="utf-8").read())["input_ids"][:200_000])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    generator = torch.Generator().manual_seed(0)
    times = []
    for step in range(steps):
        starts = torch.randint(0, len(ids) - context - 1, (batch,), generator=generator)
        x = torch.stack([ids[s:s + context] for s in starts])
        start = time.perf_counter()
        loss = model(x, labels=x).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
    timed = times[1:] if len(times) > 1 else times  # the first step warms up
    print(json.dumps({"peer": PEER, "steps": len(timed), "ms_per_step": 1000 * float(np.median(timed)),
                      "loss": float(loss.detach())}))


if __name__ == "__main__":
    command, folder = sys.argv[1], sys.argv[2]
    if command == "generate":
        generate(folder, [int(i) for i in sys.argv[3].split(",")], int(sys.argv[4]))
    elif command == "logits":
        logits(folder, [int(i) for i in sys.argv[3].split(",")], sys.argv[4])
    elif command == "finetune":
        finetune(folder, sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]))
    else:
        sys.exit(f"unknown command {command}")
