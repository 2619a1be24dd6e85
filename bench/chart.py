"""Turns the sweep's JSON lines into a Markdown table (with kiln's speed-up over each peer)
and an SVG chart: s/epoch against hidden width (batch 64) and against batch (width 512),
log-log, one line per framework. Plain SVG so it needs no plotting library.

    python3 chart.py sweep.jsonl OUT_DIR"""
import json, math, sys

runs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
out = sys.argv[2]
frameworks = ["kiln", "torch", "keras"]
names = {"kiln": "kiln", "torch": "PyTorch (FTZ)", "keras": "Keras"}
colors = {"kiln": "#d1495b", "torch": "#00798c", "keras": "#edae49"}
cost = {(r["framework"], r["width"], r["batch"]): r["s_per_epoch"] for r in runs}
points = sorted({(r["width"], r["batch"]) for r in runs})

lines = ["| width | batch | kiln s/epoch | PyTorch s/epoch | Keras s/epoch | vs PyTorch | vs Keras |", "|---|---|---|---|---|---|---|"]
for w, b in points:
    k, t, ks = cost.get(("kiln", w, b)), cost.get(("torch", w, b)), cost.get(("keras", w, b))
    fmt = lambda v: "—" if v is None else f"{v:.3f}"
    ratio = lambda peer: "—" if None in (k, peer) else f"{peer / k:.1f}×"
    lines.append(f"| {w} | {b} | {fmt(k)} | {fmt(t)} | {fmt(ks)} | {ratio(t)} | {ratio(ks)} |")
open(f"{out}/sweep.md", "w").write("\n".join(lines) + "\n")
print("\n".join(lines))

def panel(x0, title, xlabel, series):
    """series: {framework: [(x, seconds)]}; log-log axes in a 360×260 box at x0."""
    W, H, left, bottom = 360, 260, 55, 40
    xs = [x for s in series.values() for x, _ in s]
    ys = [y for s in series.values() for _, y in s]
    lx0, lx1 = math.log10(min(xs)) - 0.1, math.log10(max(xs)) + 0.1
    ly0, ly1 = math.log10(min(ys)) - 0.15, math.log10(max(ys)) + 0.15
    px = lambda x: x0 + left + (math.log10(x) - lx0) / (lx1 - lx0) * (W - left - 10)
    py = lambda y: 30 + (H - bottom) - (math.log10(y) - ly0) / (ly1 - ly0) * (H - bottom - 10)
    svg = [f'<text x="{x0 + W / 2}" y="18" text-anchor="middle" font-size="14">{title}</text>',
           f'<line x1="{x0 + left}" y1="{30 + H - bottom}" x2="{x0 + W - 10}" y2="{30 + H - bottom}" stroke="#333"/>',
           f'<line x1="{x0 + left}" y1="30" x2="{x0 + left}" y2="{30 + H - bottom}" stroke="#333"/>',
           f'<text x="{x0 + W / 2}" y="{30 + H - 8}" text-anchor="middle" font-size="12">{xlabel}</text>',
           f'<text x="{x0 + 14}" y="{30 + (H - bottom) / 2}" font-size="12" transform="rotate(-90 {x0 + 14} {30 + (H - bottom) / 2})" text-anchor="middle">s/epoch (log)</text>']
    for x in sorted(set(xs)):
        svg.append(f'<text x="{px(x)}" y="{30 + H - bottom + 15}" text-anchor="middle" font-size="11">{x}</text>')
    decade = 10 ** math.floor(ly0)
    for m in (1, 2, 5):
        for e in range(-3, 4):
            v = m * 10 ** e
            if 10 ** ly0 <= v <= 10 ** ly1:
                svg.append(f'<line x1="{x0 + left - 4}" y1="{py(v)}" x2="{x0 + W - 10}" y2="{py(v)}" stroke="#ddd"/>')
                svg.append(f'<text x="{x0 + left - 6}" y="{py(v) + 4}" text-anchor="end" font-size="10">{v:g}</text>')
    for fw, pts in series.items():
        pts = sorted(pts)
        path = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in pts)
        svg.append(f'<polyline points="{path}" fill="none" stroke="{colors[fw]}" stroke-width="2.5"/>')
        svg += [f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3.5" fill="{colors[fw]}"/>' for x, y in pts]
    return svg

by_width = {fw: [(w, cost[(fw, w, 64)]) for w, b in points if b == 64 and (fw, w, 64) in cost] for fw in frameworks}
by_batch = {fw: [(b, cost[(fw, 512, b)]) for w, b in points if w == 512 and (fw, 512, b) in cost] for fw in frameworks}
body = panel(0, "cost vs hidden width (batch 64)", "hidden width", by_width)
body += panel(380, "cost vs batch size (width 512)", "batch size", by_batch)
for i, fw in enumerate(frameworks):
    body.append(f'<rect x="{760}" y="{40 + 22 * i}" width="14" height="14" fill="{colors[fw]}"/>')
    body.append(f'<text x="{780}" y="{52 + 22 * i}" font-size="12">{names[fw]}</text>')
svg = ['<svg xmlns="http://www.w3.org/2000/svg" width="880" height="300" font-family="sans-serif">',
       '<rect width="100%" height="100%" fill="white"/>'] + body + ["</svg>"]
open(f"{out}/sweep.svg", "w").write("\n".join(svg) + "\n")
