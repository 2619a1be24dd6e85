"""Talks to `kiln serve` with the official `openai` client, as an application would.

Usage: openai_client.py BASE_URL MODEL REQUESTS_JSON. REQUESTS_JSON is a list of
{"prompt", "seed", "temperature", "max_tokens"}. Prints one JSON line: the first request's
text plain and streamed, every request's text streamed concurrently (one thread each),
and the HTTP status of two bad requests as the client raises them.
"""
import json
import sys
from concurrent.futures import ThreadPoolExecutor

from openai import BadRequestError, NotFoundError, OpenAI

base, model, requests = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
client = OpenAI(base_url=base + "/v1", api_key="not-checked", max_retries=0)


def settings(r):
    return dict(model=model, prompt=r["prompt"], max_tokens=r["max_tokens"],
                seed=r["seed"], temperature=r["temperature"])


def plain(r):
    answer = client.completions.create(**settings(r))
    assert answer.choices[0].finish_reason == "length", answer
    assert answer.usage.completion_tokens == r["max_tokens"], answer
    return answer.choices[0].text


def streamed(r):
    pieces, finish = [], None
    for chunk in client.completions.create(stream=True, **settings(r)):
        for choice in chunk.choices:
            pieces.append(choice.text)
            finish = choice.finish_reason or finish
    assert finish == "length", finish
    return "".join(pieces)


errors = {}
try:
    client.completions.create(**dict(settings(requests[0]), max_tokens=10**9))
except BadRequestError as e:
    errors["max_tokens"] = e.status_code
try:
    client.completions.create(**dict(settings(requests[0]), model="no-such-model"))
except NotFoundError as e:
    errors["model"] = e.status_code

assert [m.id for m in client.models.list()] == [model]
with ThreadPoolExecutor(len(requests)) as pool:
    concurrent = list(pool.map(streamed, requests))
print(json.dumps({
    "plain": [plain(requests[0])],
    "streamed": [streamed(requests[0])],
    "concurrent": concurrent,
    "errors": errors,
}))
