"""The ``README.md`` of a bundle on the Hugging Face Hub, generated from its card: YAML
metadata (licence, library, tags), the figures per split, the threshold and preprocessing, the
provenance and how to load the bundle with segcore.
"""

from __future__ import annotations

import json
import re

from segcore.bundles.card import CARD_FILE, ModelCard
from segcore.bundles.store import MODEL_FILE
from segcore.metrics.counts import METRIC_NAMES

# Licence identifiers the Hub accepts in a model card's YAML metadata (a common subset).
HUB_LICENCES = frozenset(
    {
        "apache-2.0",
        "mit",
        "bsd-2-clause",
        "bsd-3-clause",
        "cc0-1.0",
        "cc-by-4.0",
        "cc-by-sa-4.0",
        "cc-by-nc-4.0",
        "cc-by-nc-sa-4.0",
        "cc-by-nc-nd-4.0",
        "gpl-3.0",
        "lgpl-3.0",
        "agpl-3.0",
        "mpl-2.0",
        "openrail",
        "unlicense",
        "other",
        "unknown",
    }
)


def _hub_licence(licence: str) -> dict[str, str]:
    """Maps a free-form licence to the Hub's YAML metadata (``license``, ``license_name``)."""
    key = licence.strip().lower()
    if key in ("", "unspecified", "unknown"):
        return {"license": "unknown"}
    if key in HUB_LICENCES:
        return {"license": key}
    slug = re.sub(r"[^a-z0-9]+", "-", key).strip("-") or "custom"
    return {"license": "other", "license_name": slug}


def render_readme(card: ModelCard, repo_id: str) -> str:
    """Returns the Hub ``README.md`` (YAML metadata + Markdown) for a bundle's card.

    It states the licence (``card.licence``; mapped to the Hub's ``license`` metadata, with
    ``unknown`` for ``"unspecified"`` and ``other`` for names the Hub does not list), the
    metrics, the threshold and preprocessing, the provenance, and how to load the bundle
    with segcore.

    Args:
        card: the bundle's card.
        repo_id: the repository it is published in.
    """
    meta = {
        **_hub_licence(card.licence),
        "library_name": "keras",
        "pipeline_tag": "image-segmentation",
        "tags": ["segcore", "deeplabv3plus", "nuclei-segmentation", "histopathology", "h-and-e"],
    }
    front = ["---"]
    for key, value in meta.items():
        front.append(f"{key}: {json.dumps(value)}")
    front.append("---")
    metric_rows = [
        f"| {key} | {fig.images} | {fig.threshold:g} | "
        + " | ".join(f"{fig.pooled[name]:.4f}" for name in METRIC_NAMES)
        + " |"
        for key, fig in card.metrics.items()
    ]
    metrics = (
        "\n".join(
            [
                "| split | images | threshold | Dice | Jaccard | precision | recall |",
                "| --- | --- | --- | --- | --- | --- | --- |",
                *metric_rows,
            ]
        )
        + "\n\nPooled over the pixels of all images (full size, tiled inference)."
        if metric_rows
        else "No metrics were recorded."
    )
    sections = [
        "\n".join(front),
        f"# {card.name}",
        "DeepLabV3+ (ResNet50) nucleus segmentation for H&E histopathology images, trained "
        "and served with segcore. The model outputs a per-pixel nucleus "
        f"probability; pixels above the threshold **{card.threshold:g}** (chosen on validation "
        "data) are nuclei.",
        f"## Licence\n\n{card.licence}\n\nMind the licence of the training data as well"
        f"{': ' + str(card.dataset['name']) if card.dataset.get('name') else ''}.",
        f"## Metrics\n\n{metrics}",
        "## Usage\n\n"
        "```python\n"
        "from segcore.bundles.loading import load_bundle\n\n"
        f'bundle = load_bundle("hf://{repo_id}@<commit>")  # pin a commit hash\n'
        "model, preprocess, threshold = bundle.model, bundle.preprocess, bundle.threshold\n"
        "```\n\n"
        f"`load_bundle` checks `{MODEL_FILE}` against the SHA-256 in `{CARD_FILE}` and applies "
        f"the preprocessing below before the model. Tiles of {card.input_size}×"
        f"{card.input_size} pixels were used in training.",
        "## Details\n\n"
        f"- Preprocessing: `{json.dumps(card.preprocess)}`\n"
        f"- Architecture: `{json.dumps(card.architecture)}`\n"
        f"- Backbone initialisation: {card.backbone_weights or 'random'}\n"
        f"- Dataset: `{json.dumps(card.dataset)}`\n"
        f"- Training: `{json.dumps(card.training)}`\n"
        f"- Software: `{json.dumps(card.versions)}`\n"
        f"- Created: {card.created}\n"
        f"- `{MODEL_FILE}` sha256: `{card.model_sha256}`",
    ]
    return "\n\n".join(sections) + "\n"
