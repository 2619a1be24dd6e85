"""PyTorch's side of the generation benchmark in bench/gpt.sh: the character-level GPT of
../shared/peers/torch_char_gpt.py (4 layers, 4 heads, width 128, context 64, vocabulary =
the text's sorted characters; LayerNorm, one Linear for q/k/v and one for the output
projection, a 4x GELU MLP, learned position embedding, bias-free output head), randomly
initialised (seed 1337: the weights do not change the cost, so this is for timing only),
generating TOKENS tokens after the prompt "ROMEO:" with temperature 0.8 and top-k 40 the
naive way: every new token runs the whole forward pass over the last `context` tokens (no
KV cache). Eval mode, torch.no_grad(), denormals flushed.

    python bench/torch_generate.py TEXT [TOKENS=500]

Prints one JSON line: {"peer": "pytorch-<version>", "tokens": N, "seconds": s, "tokens_per_s": r}.
"""
import json
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

LAYERS, HEADS, WIDTH, CONTEXT = 4, 4, 128, 64
PROMPT, TEMPERATURE, TOP_K = "ROMEO:", 0.8, 40


class DecoderLayer(nn.Module):
    """Pre-norm transformer layer: causal self-attention, then a 4x GELU MLP, each residual."""

    def __init__(self, width, heads):
        super().__init__()
        self.heads = heads
        self.norm_attn = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.norm_mlp = nn.LayerNorm(width)
        self.up = nn.Linear(width, 4 * width)
        self.down = nn.Linear(4 * width, width)

    def forward(self, h):
        n, t, w = h.shape
        # (n, t, 3w) -> 3 x (n, heads, t, w / heads)
        q, k, v = self.qkv(self.norm_attn(h)).view(n, t, 3, self.heads, w // self.heads).permute(2, 0, 3, 1, 4)
        mixed = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        h = h + self.proj(mixed.transpose(1, 2).reshape(n, t, w))
        return h + self.down(F.gelu(self.up(self.norm_mlp(h))))


class CharGPT(nn.Module):
    def __init__(self, vocab, layers, heads, width, context):
        super().__init__()
        self.context = context
        self.token_embedding = nn.Embedding(vocab, width)
        self.position_embedding = nn.Embedding(context, width)
        self.layers = nn.ModuleList(DecoderLayer(width, heads) for _ in range(layers))
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocab, bias=False)

    def forward(self, ids):
        h = self.token_embedding(ids) + self.position_embedding(torch.arange(ids.shape[1], device=ids.device))
        for layer in self.layers:
            h = layer(h)
        return self.head(self.norm(h))


def sample_next(logits, generator):
    """One id from the last position's logits: temperature, keep the top k, draw."""
    logits = logits / TEMPERATURE
    top, where = torch.topk(logits, min(TOP_K, logits.shape[-1]))
    choice = torch.multinomial(F.softmax(top, dim=-1), 1, generator=generator)
    return where.gather(-1, choice)


def main():
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    text = open(sys.argv[1], encoding="utf-8").read()
    tokens = int(sys.argv[2]) if len(sys.argv) > 2 else 500
    torch.set_flush_denormal(True)
    torch.manual_seed(1337)
    vocab = sorted(set(text))
    code = {c: i for i, c in enumerate(vocab)}
    model = CharGPT(len(vocab), LAYERS, HEADS, WIDTH, CONTEXT).eval()
    generator = torch.Generator().manual_seed(1)
    ids = torch.tensor([[code[c] for c in PROMPT]], dtype=torch.long)
    with torch.no_grad():
        start = time.perf_counter()
        for _ in range(tokens):
            window = ids[:, -CONTEXT:]  # crop to the context: the whole window again every token
            ids = torch.cat([ids, sample_next(model(window)[:, -1, :], generator)], dim=1)
        seconds = time.perf_counter() - start
    assert ids.shape[1] == len(PROMPT) + tokens
    print(json.dumps({"peer": "pytorch-" + torch.__version__, "tokens": tokens, "seconds": round(seconds, 4),
                      "tokens_per_s": round(tokens / seconds, 1)}))


if __name__ == "__main__":
    main()
