"""Load for `kiln serve`'s streamed completions, as bench/serve_lm.sh uses it: CONCURRENCY
client threads, each sending REQUESTS streamed requests one after another (stdlib
http.client, one connection per request, as many OpenAI clients do), every request asking
for exactly TOKENS tokens (temperature 0.8, top-k 40, a seed of its own).

    python bench/serve_lm_load.py HOST:PORT MODEL CONCURRENCY REQUESTS TOKENS PROMPT

Prints one JSON line: concurrency, requests, tokens (generated, from each stream's usage),
seconds (first request sent to last stream ended), tokens_per_s (aggregate), and the
time to first token (first text chunk) p50 and p99 in ms.
"""
import http.client
import json
import sys
import threading
import time

address, model, concurrency, requests, tokens, prompt = sys.argv[1:7]
host, port = address.split(":")
concurrency, requests, tokens = int(concurrency), int(requests), int(tokens)
results, lock = [], threading.Lock()


def one(seed):
    body = json.dumps({"model": model, "prompt": prompt, "max_tokens": tokens, "temperature": 0.8,
                       "top_k": 40, "seed": seed, "stream": True,
                       "stream_options": {"include_usage": True}})
    conn = http.client.HTTPConnection(host, int(port), timeout=600)
    start = time.perf_counter()
    conn.request("POST", "/v1/completions", body, {"Content-Type": "application/json"})
    response = conn.getresponse()
    assert response.status == 200, (response.status, response.read())
    first, generated = None, None
    for line in response:
        if not line.startswith(b"data: {"):
            continue
        chunk = json.loads(line[6:])
        if first is None and chunk["choices"] and chunk["choices"][0]["text"]:
            first = time.perf_counter() - start
        if chunk.get("usage"):
            generated = chunk["usage"]["completion_tokens"]
    conn.close()
    assert generated == tokens, generated
    with lock:
        results.append((first, generated))


def client(index):
    for r in range(requests):
        one(1000 * index + r)


threads = [threading.Thread(target=client, args=(i,)) for i in range(concurrency)]
began = time.perf_counter()
for t in threads:
    t.start()
for t in threads:
    t.join()
seconds = time.perf_counter() - began
firsts = sorted(f for f, _ in results)


def percentile(q):
    return 1000 * firsts[min(len(firsts) - 1, int(q * len(firsts)))]


total = sum(g for _, g in results)
print(json.dumps({"concurrency": concurrency, "requests": len(results), "tokens": total,
                  "seconds": seconds, "tokens_per_s": total / seconds,
                  "ttft_p50_ms": percentile(0.5), "ttft_p99_ms": percentile(0.99)}))
