"""Hugging Face transformers' side of bench/serve_lm.sh: a kiln character-level GPT file
loaded into GPT2LMHeadModel (the same architecture: learned positions, pre-norm blocks,
fused q|k|v with each head's slice contiguous, exact GELU, untied bias-free head; kiln's
kernels are [in, out] like GPT-2's Conv1D), generating with `model.generate` (KV cache on),
eval mode, no_grad, 2 threads, denormals flushed.

    python bench/hf_generate_kiln_gpt.py MODEL.safetensors PROMPT TOKENS KILN_GREEDY_TEXT

Checks first that its greedy continuation of PROMPT equals KILN_GREEDY_TEXT (what `kiln
generate --temperature 0` printed after the prompt), so both run the same model; then
times sampling (temperature 0.8, top-k 40) of exactly TOKENS new tokens, three times.
Prints one JSON line: {"peer", "tokens", "tokens_per_s" (median of 3), "greedy_agrees"}.
"""
import json
import statistics
import sys
import time

import torch
from safetensors import safe_open
from transformers import GPT2Config, GPT2LMHeadModel

torch.set_num_threads(2)
torch.set_flush_denormal(True)
path, prompt, tokens, kiln_greedy = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]

with safe_open(path, "pt") as f:
    meta = f.metadata()
    weights = {k: f.get_tensor(k) for k in f.keys()}
spec = json.loads(meta["kiln.lm"])["spec"]["model"]
chars = json.loads(meta["kiln.tokenizer"])["chars"]
layers, width, heads, context = spec["layers"], spec["width"], spec["heads"], spec["context"]
config = GPT2Config(vocab_size=len(chars), n_positions=context, n_embd=width, n_layer=layers,
                    n_head=heads, activation_function="gelu", resid_pdrop=0.0, embd_pdrop=0.0,
                    attn_pdrop=0.0, layer_norm_epsilon=spec.get("layer_norm_epsilon", 1e-5),
                    tie_word_embeddings=False, bos_token_id=None, eos_token_id=None)
model = GPT2LMHeadModel(config).eval()
state = {"transformer.wte.weight": weights["tok_embedding"],
         "transformer.wpe.weight": weights["pos_embedding"],
         "transformer.ln_f.weight": weights["ln_f.gamma"], "transformer.ln_f.bias": weights["ln_f.beta"],
         "lm_head.weight": weights["head.kernel"]}
names = {"ln_1.gamma": "ln_1.weight", "ln_1.beta": "ln_1.bias", "ln_2.gamma": "ln_2.weight",
         "ln_2.beta": "ln_2.bias", "attention.qkv.kernel": "attn.c_attn.weight",
         "attention.qkv.bias": "attn.c_attn.bias", "attention.proj.kernel": "attn.c_proj.weight",
         "attention.proj.bias": "attn.c_proj.bias", "mlp.fc.kernel": "mlp.c_fc.weight",
         "mlp.fc.bias": "mlp.c_fc.bias", "mlp.proj.kernel": "mlp.c_proj.weight", "mlp.proj.bias": "mlp.c_proj.bias"}
for layer in range(layers):
    for kiln_name, hf_name in names.items():
        state[f"transformer.h.{layer}.{hf_name}"] = weights[f"blocks.{layer}.{kiln_name}"]
missing, unexpected = model.load_state_dict(state, strict=False)
assert not unexpected and all(k.endswith("attn.bias") or k.endswith("masked_bias") for k in missing), (missing, unexpected)

ids = torch.tensor([[chars.index(c) for c in prompt]])
with torch.no_grad():
    greedy = model.generate(ids, do_sample=False, max_new_tokens=len(kiln_greedy), min_new_tokens=len(kiln_greedy),
                            pad_token_id=0)
    greedy_text = "".join(chars[i] for i in greedy[0, ids.shape[1]:].tolist())
    rates = []
    for run in range(4):
        torch.manual_seed(run)
        start = time.perf_counter()
        out = model.generate(ids, do_sample=True, temperature=0.8, top_k=40, max_new_tokens=tokens,
                             min_new_tokens=tokens, pad_token_id=0)
        seconds = time.perf_counter() - start
        assert out.shape[1] - ids.shape[1] == tokens
        if run:  # the first run warms up
            rates.append(tokens / seconds)
import transformers
print(json.dumps({"peer": f"transformers-{transformers.__version__}", "tokens": tokens,
                  "tokens_per_s": statistics.median(rates), "greedy_agrees": greedy_text == kiln_greedy}))
