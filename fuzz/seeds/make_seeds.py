#!/usr/bin/env python3
"""Makes the committed seed inputs in fuzz/seeds/TARGET/ from the repository's own files.

Run from anywhere: python3 fuzz/seeds/make_seeds.py. It rewrites every seed folder but
model_load/, whose model files are copied by hand from
crates/kiln-cli/tests/fixtures/legacy/ (and which model_metadata reads as its bases).
Outputs are deterministic (gzip with mtime 0), so rerunning gives the same bytes.
"""

import gzip
import json
import shutil
import struct
from pathlib import Path

FUZZ = Path(__file__).resolve().parent.parent
ROOT = FUZZ.parent
SEEDS = FUZZ / "seeds"
LEGACY = ROOT / "crates/kiln-cli/tests/fixtures/legacy"

# Must match KEYS and BASES in fuzz_targets/model_metadata.rs.
KEYS = [
    "format", "format_version", "kiln.kind", "kiln.name", "kiln.architecture",
    "kiln.preprocessing", "kiln.classes", "kiln.training", "kiln.data", "kiln.lineage",
    "kiln.table", "kiln.compression", "kiln.sparse", "kiln.sparse_int8", "kiln.lm",
    "kiln.tokenizer", "kiln.vocab_size",
]
BASES = ["mlp", "cnn", "int8", "pruned", "ensemble", "gpt"]


def gz(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


def fresh(target: str) -> Path:
    folder = SEEDS / target
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


def metadata(model: Path) -> dict:
    raw = model.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8 : 8 + n])["__metadata__"]


def digits_rows(count: int):
    text = gzip.decompress((ROOT / "crates/kiln/src/data/digits.csv.gz").read_bytes()).decode()
    lines = [l for l in text.splitlines() if l.strip()][:count]
    return [[int(float(v)) for v in l.split(",")] for l in lines]


def idx(dims, data: bytes) -> bytes:
    return bytes([0, 0, 8, len(dims)]) + b"".join(struct.pack(">I", d) for d in dims) + data


def model_metadata():
    out = fresh("model_metadata")
    for b, base in enumerate(BASES):
        meta = metadata(SEEDS / "model_load" / f"{base}.safetensors")
        for k, key in enumerate(KEYS):
            if key in meta:
                (out / f"{base}-set-{key}").write_bytes(bytes([b, k]) + meta[key].encode())
        # Keys the base lacks, so the fuzzer starts from values of the right shape.
        (out / f"{base}-remove-kind").write_bytes(bytes([b, 128 + KEYS.index("kiln.kind")]))
        (out / f"{base}-whole").write_bytes(bytes([b, 255]) + json.dumps(meta).encode())
    mlp = BASES.index("mlp")
    (out / "mlp-set-kiln.sparse").write_bytes(bytes([mlp, KEYS.index("kiln.sparse")]) + b'["layers.1.kernel"]')
    (out / "mlp-set-kiln.table").write_bytes(
        bytes([mlp, KEYS.index("kiln.table")])
        + json.dumps({
            "schema": {
                "columns": [{"name": "a", "kind": "numeric"},
                            {"name": "c", "kind": "categorical", "categories": ["x", "y"]}],
                "label": "y", "class_names": ["p", "q"], "has_header": True,
            },
            "cleaning": {"missing": None, "fill": [1.0, 0.0], "bounds": [[0.0, 5.0], None]},
        }).encode()
    )


def idx_seeds():
    out = fresh("idx")
    rows = digits_rows(4)
    images = bytes(v * 15 for r in rows for v in r[:64])  # 8x8, 0..16 scaled to 0..240
    labels = bytes(r[64] for r in rows)
    (out / "images-4x8x8").write_bytes(idx([4, 8, 8], images))
    (out / "labels-4").write_bytes(idx([4], labels))
    (out / "images-4x8x8.gz").write_bytes(gz(idx([4, 8, 8], images)))
    (out / "labels-4.gz").write_bytes(gz(idx([4], labels)))
    (out / "four-dims").write_bytes(idx([2, 2, 2, 2], bytes(range(16))))
    (out / "empty").write_bytes(idx([0, 28, 28], b""))
    (out / "truncated").write_bytes(idx([3, 3], bytes(5)))
    (out / "f32-type").write_bytes(bytes([0, 0, 0x0D, 1, 0, 0, 0, 1]) + bytes(4))


def csv_seeds():
    out = fresh("csv")
    rows = digits_rows(6)
    digits = "".join(",".join(map(str, r)) + "\n" for r in rows)
    (out / "digits.csv").write_text(digits)
    (out / "digits-rows.csv").write_bytes((LEGACY / "digits-rows.csv").read_bytes()[:600])
    wine = (ROOT / "examples/data/wine.csv").read_text().splitlines()
    dirty = (ROOT / "examples/data/wine-dirty.csv").read_text().splitlines()
    (out / "wine-head.csv").write_text("\n".join(wine[:4] + wine[60:62] + wine[-2:]) + "\n")
    (out / "wine-dirty-head.csv").write_text("\n".join(dirty[:6]) + "\n")
    (out / "wine-head.csv.gz").write_bytes(gz(("\n".join(wine[:5]) + "\n").encode()))
    (out / "header-label-first.csv").write_text("label,x,y\n1,0.5,2\n0,-1e3,3.25\n1,4,5\n")
    (out / "quoted.csv").write_text('city,"pop, k",kind\n"New York, NY",8000,big\n"Ely",20,"small"\n')
    (out / "bom-crlf.csv").write_text("\ufeffa,b,y\r\n1,2,0\r\n\r\n3,4,1\r\n")
    (out / "missing.csv").write_text("a,b,c,y\n1,NA,?,x\n2,,3,y\nN/A,null,4,x\n")


def spec_seeds():
    out = fresh("spec")
    for f in sorted((ROOT / "examples").glob("*.toml")):
        shutil.copy(f, out / f.name)
    shutil.copy(ROOT / "crates/kiln/src/spec/default_spec.toml", out / "default_spec.toml")
    for name in ["mlp.toml", "cnn.toml", "gpt.toml"]:
        shutil.copy(LEGACY / name, out / f"legacy-{name}")


def tokenizer_seeds():
    out = fresh("tokenizer")
    corpus = (LEGACY / "corpus.txt").read_bytes()
    readme = (ROOT / "README.md").read_bytes()[:1500]
    (out / "char-corpus").write_bytes(b"\x00" + corpus[:1200])
    (out / "bpe-300-corpus").write_bytes(bytes([1 | (5 << 2)]) + corpus)
    (out / "bpe-512-readme").write_bytes(bytes([1 | (32 << 2)]) + readme)
    (out / "char-probe").write_bytes(b"\x00" + corpus[:400] + b"\x00" + corpus[400:600])
    (out / "bpe-unicode").write_bytes(
        bytes([1 | (10 << 2)]) + "héllo wörld  \t\n\n naïve café 123 4.5 ——  日本語 \u3000 x".encode() * 3
    )
    gpt_tokenizer = metadata(SEEDS / "model_load" / "gpt.safetensors")["kiln.tokenizer"]
    (out / "saved-char").write_bytes(b"\x02" + gpt_tokenizer.encode() + b"\x00First Citizen:")
    merges = json.dumps({"type": "bpe", "merges": [[32, 116], [104, 101], [256, 257], [97, 97]]})
    chain = [(104, 101), (32, 116), (257, 256), (108, 108), (259, 111)]
    (out / "merges-bytes").write_bytes(
        bytes([3, len(chain)]) + b"".join(struct.pack("<HH", a, b) for a, b in chain) + b" the hello thee"
    )
    (out / "saved-bpe").write_bytes(b"\x02" + merges.encode() + b"\x00 the theaa a the")


if __name__ == "__main__":
    model_metadata()
    idx_seeds()
    csv_seeds()
    spec_seeds()
    tokenizer_seeds()
    total = sum(f.stat().st_size for f in SEEDS.rglob("*") if f.is_file())
    print(f"seeds: {total} bytes in {sum(1 for f in SEEDS.rglob('*') if f.is_file())} files")
