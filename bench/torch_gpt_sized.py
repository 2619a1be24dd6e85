"""PyTorch's side of the "scale on paper" check in bench/gpt.sh: the training step of a
character-level GPT of any size, timed. The model has the style of
../shared/peers/torch_char_gpt.py (LayerNorm, one Linear for q/k/v and one for the output
projection, a 4x GELU MLP, learned position embedding, bias-free head, no dropout,
vocabulary = the text's sorted characters); training is AdamW (lr 1e-3, betas 0.9/0.99,
weight decay 0.1 on parameters of 2 or more dimensions only), gradient norm clipped to 1.0,
random windows of the first 90% of the text, denormals flushed. The first 3 steps are
warm-up and left out of the timing (fewer when STEPS <= 3: at least one step is timed).

    python bench/torch_gpt_sized.py TEXT LAYERS HEADS WIDTH CONTEXT BATCH STEPS

Prints one JSON line with ms_per_step (timed steps only) and params.
"""
import json
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

WARMUP = 3


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
        q, k, v = self.qkv(self.norm_attn(h)).view(n, t, 3, self.heads, w // self.heads).permute(2, 0, 3, 1, 4)
        mixed = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        h = h + self.proj(mixed.transpose(1, 2).reshape(n, t, w))
        return h + self.down(F.gelu(self.up(self.norm_mlp(h))))


class CharGPT(nn.Module):
    def __init__(self, vocab, layers, heads, width, context):
        super().__init__()
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


def main():
    if len(sys.argv) != 8:
        sys.exit(__doc__)
    text = open(sys.argv[1], encoding="utf-8").read()
    layers, heads, width, context, batch, steps = (int(a) for a in sys.argv[2:])
    if width % heads or min(layers, heads, width, context, batch, steps) < 1:
        sys.exit("LAYERS, HEADS, WIDTH, CONTEXT, BATCH, STEPS must be positive and HEADS must divide WIDTH")
    torch.set_flush_denormal(True)
    torch.manual_seed(1337)
    vocab = sorted(set(text))
    code = {c: i for i, c in enumerate(vocab)}
    ids = torch.tensor([code[c] for c in text], dtype=torch.long)
    train = ids[: int(0.9 * len(ids))]
    model = CharGPT(len(vocab), layers, heads, width, context).train()
    matrices = [p for p in model.parameters() if p.dim() >= 2]
    vectors = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": matrices, "weight_decay": 0.1},
                                   {"params": vectors, "weight_decay": 0.0}], lr=1e-3, betas=(0.9, 0.99))
    offsets = torch.arange(context + 1)

    warmup = min(WARMUP, steps - 1)
    start = None
    for step in range(steps):
        if step == warmup:
            start = time.perf_counter()
        windows = train[torch.randint(len(train) - context, (batch, 1)) + offsets]
        inputs, targets = windows[:, :-1], windows[:, 1:]
        logits = model(inputs)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
    seconds = time.perf_counter() - start
    timed = steps - warmup
    print(json.dumps({"peer": "pytorch-" + torch.__version__, "params": sum(p.numel() for p in model.parameters()),
                      "layers": layers, "heads": heads, "width": width, "context": context, "batch": batch,
                      "steps": steps, "timed_steps": timed, "ms_per_step": round(1000 * seconds / timed, 2),
                      "tokens_per_s": round(timed * batch * context / seconds), "loss": round(loss.item(), 4)}))


if __name__ == "__main__":
    main()
