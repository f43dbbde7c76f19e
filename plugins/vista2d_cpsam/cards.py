"""Model cards ``cpsam`` and ``cpsam_v2``: cellpose 4's Cellpose-SAM weights, from the host cellpose itself
downloads them from (``cellpose.models._MODEL_URL``), with the settings that segment as cellpose does."""

from __future__ import annotations

from .weights import eval_settings

_HOST = "https://huggingface.co/mouseland/cellpose-sam/resolve/main/"
_CITATION = ("Pachitariu, Rariden & Stringer, Cellpose-SAM: superhuman generalization for cellular "
             "segmentation, bioRxiv 2025 (doi:10.1101/2025.04.28.651001)")


def _card(file: str, description: str) -> dict:
    return {
        "url": _HOST + file,
        "description": description,
        "licence": "CC BY-NC 4.0",  # the weights (trained on cellpose's CC-BY-NC data); cellpose's code is BSD-3
        "citation": _CITATION,
        "recipe": eval_settings(),
    }


CPSAM = _card("cpsam", "Cellpose-SAM (cellpose 4.0): SAM ViT-L, 8-px patches, generalist cells and nuclei")
CPSAM_V2 = _card("cpsam_v2", "Cellpose-SAM v2 (cellpose 4.1+, its default model): SAM ViT-L, 8-px patches")
