"""Builds ``samples/``, the app's built-in real tissue, from the MoNuSeg test tiles.

One 512×512 crop from each of seven MoNuSeg 2018 **test** tiles (seven organs), with its
instance labels (uint16 PNG, 0 = background), laid out as a dataset folder with a ``test/``
split only, a ``dataset.json`` declaring 0.25 µm/px, and the licence and citation beside them
(``samples/README.md``). ``../shared/data/README.md`` allows shipping these and nothing else.

Each crop is the 512×512 window (on a 244-pixel grid) holding the most annotated nuclei, so
every sample shows crowded tissue. Deterministic: running it again rewrites the same files.

Usage::

    python scripts/make_samples.py [--data ../shared/data/monuseg] [--out samples]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from segcore.data.images import encode_png, read_image

CROP = 512
TILES = {  # MoNuSeg test tile -> organ (TCGA project)
    "TCGA-AC-A2FO-01A-01-TS1": "breast",
    "TCGA-2Z-A9J9-01A-01-TS1": "kidney",
    "TCGA-44-2665-01B-06-BS6": "lung",
    "TCGA-A6-6782-01A-01-BS1": "colon",
    "TCGA-CU-A0YN-01A-02-BSB": "bladder",
    "TCGA-EJ-A46H-01A-03-TSC": "prostate",
    "TCGA-HT-8564-01Z-00-DX1": "brain",
}

README = """# Built-in samples: crops of MoNuSeg 2018 test tiles

Seven 512×512 crops of MoNuSeg 2018 **test** tiles (H&E, 40×, about 0.25 µm/px), one per
organ, with their nucleus annotations as instance labels (`masks/*.png`, uint16, 0 =
background, one value per nucleus). They are the app's default samples on a fresh clone and are
made by `python scripts/make_samples.py` from `../shared/data/monuseg/test`.

| file | organ | source tile | crop (x, y) | nuclei |
|---|---|---|---|---|
{rows}

No model shipped here was trained on these tiles: they belong to MoNuSeg's test split, so the
Evaluate page's figures on them are test figures.

## Licence and citation

CC BY-NC-SA 4.0 (https://creativecommons.org/licenses/by-nc-sa/4.0/), the licence of the
MoNuSeg data: non-commercial use, with attribution, sharing alike. These crops were cut
from the original tiles and their annotations rendered as label images; nothing else changed.

Please cite:

- N. Kumar et al., "A Multi-Organ Nucleus Segmentation Challenge", IEEE Transactions on
  Medical Imaging 39(5), 1380–1391, 2020.
- N. Kumar et al., "A Dataset and a Technique for Generalized Nuclear Segmentation for
  Computational Pathology", IEEE Transactions on Medical Imaging 36(7), 1550–1560, 2017.

The tiles come from The Cancer Genome Atlas (TCGA) whole-slide images.
"""


def best_window(labels: np.ndarray) -> tuple[int, int]:
    """``(x, y)`` of the ``CROP``-sided window (244-pixel grid) holding the most nuclei."""
    height, width = labels.shape
    best, where = -1, (0, 0)
    for y in range(0, height - CROP + 1, 244):
        for x in range(0, width - CROP + 1, 244):
            count = np.unique(labels[y : y + CROP, x : x + CROP]).size - 1
            if count > best:
                best, where = count, (x, y)
    return where


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="../shared/data/monuseg", type=Path)
    parser.add_argument("--out", default="samples", type=Path)
    args = parser.parse_args()
    images, masks = args.out / "test" / "images", args.out / "test" / "masks"
    images.mkdir(parents=True, exist_ok=True)
    masks.mkdir(parents=True, exist_ok=True)
    rows = []
    for tile, organ in TILES.items():
        image = read_image(args.data / "test" / "images" / f"{tile}.tif")
        labels = cv2.imread(str(args.data / "test" / "masks" / f"{tile}.png"), -1)
        x, y = best_window(labels)
        crop = labels[y : y + CROP, x : x + CROP]
        values = np.unique(crop)
        values = values[values > 0]
        lookup = np.zeros(int(crop.max()) + 1, np.uint16)
        lookup[values] = np.arange(1, values.size + 1)
        stem = f"{organ}_{tile[:12]}"
        (images / f"{stem}.png").write_bytes(encode_png(image[y : y + CROP, x : x + CROP]))
        cv2.imwrite(str(masks / f"{stem}.png"), lookup[crop])
        rows.append(f"| `{stem}.png` | {organ} | {tile} | {x}, {y} | {values.size} |")
        print(stem, x, y, values.size)
    (args.out / "dataset.json").write_text(json.dumps({"pixel_size": 0.25}) + "\n")
    (args.out / "README.md").write_text(README.format(rows="\n".join(rows)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
