"""Writes wine.csv (UCI Wine, as scikit-learn ships it) and wine-dirty.csv (the same rows
with injected gaps, outliers and duplicates, for kiln's cleaning example). Deterministic.

    python3 make_wine.py path/to/sklearn/datasets/data/wine_data.csv
"""
import csv
import random
import sys

NAMES = ["alcohol", "malic_acid", "ash", "alcalinity_of_ash", "magnesium", "total_phenols",
         "flavanoids", "nonflavanoid_phenols", "proanthocyanins", "color_intensity", "hue",
         "od280_od315", "proline", "cultivar"]

with open(sys.argv[1]) as f:
    rows = list(csv.reader(f))[1:]
clean = [r[:13] + [f"cultivar_{int(r[13]) + 1}"] for r in rows]

rng = random.Random(20261129)
dirty = [list(r) for r in clean]
for r in dirty:
    for c in range(13):
        roll = rng.random()
        if roll < 0.04:
            r[c] = rng.choice(["", "NA", "?"])          # a gap, written three ways
        elif roll < 0.05:
            r[c] = f"{float(r[c]) * rng.choice([25, -25]):g}"  # a gross outlier (entry error)
dirty += [list(dirty[i]) for i in rng.sample(range(len(dirty)), 6)]  # exact duplicates

for name, table in [("wine.csv", clean), ("wine-dirty.csv", dirty)]:
    with open(name, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(NAMES)
        w.writerows(table)
