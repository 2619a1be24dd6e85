"""PyTorch's side of the inference comparison: the reference MLP (784-512-10, softmax) in
eval mode under no_grad, denormals flushed, default threads. Batch-1 latency (p50, p99 over
ITERATIONS calls) and batch-1024 throughput, as one JSON line, measured the way
`kiln-bench predict` measures kiln's predict path (softmax output included)."""
import json, sys, time
import torch
from torch import nn

iterations = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
torch.set_flush_denormal(True)
torch.manual_seed(0)
model = nn.Sequential(nn.Linear(784, 512), nn.ReLU(), nn.Dropout(0.2), nn.Linear(512, 10), nn.Softmax(dim=1)).eval()
one = torch.rand(1, 784)
batch = torch.rand(1024, 784)
with torch.no_grad():
    for _ in range(50):
        model(one)
    latencies = []
    for _ in range(iterations):
        t = time.perf_counter()
        model(one)
        latencies.append(time.perf_counter() - t)
    latencies.sort()
    pct = lambda p: latencies[min(int(len(latencies) * p), len(latencies) - 1)] * 1e6
    model(batch)
    rounds = 20
    t = time.perf_counter()
    for _ in range(rounds):
        model(batch)
    throughput = rounds * 1024 / (time.perf_counter() - t)
print(json.dumps({"framework": "pytorch-" + torch.__version__ + "-ftz", "threads": torch.get_num_threads(),
                  "batch1_p50_us": round(pct(0.5), 3), "batch1_p99_us": round(pct(0.99), 3),
                  "batch1024_samples_per_s": round(throughput)}))
