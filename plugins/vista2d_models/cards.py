"""Built-in model cards (group ``vista2d.models``): where the public weights are and what goes with them.

No sha256 is published for these files (MONAI's model zoo once listed md5 sums, and SAM's file names carry
the first hex digits of theirs), so the cards leave ``sha256`` unset rather than record sums computed here.
"""

from __future__ import annotations

_SAM_CITATION = "Kirillov et al., Segment Anything, ICCV 2023 (arXiv:2304.02643)"

VISTA2D = {
    "url": "https://github.com/Project-MONAI/model-zoo/releases/download/model_zoo_bundle_data/vista2d_model.pt",
    "description": "Official VISTA2D model (MONAI model zoo): SAM ViT-B at 1024, 15K microscopy images",
    "licence": "CC BY-NC-SA 4.0",
    "citation": "VISTA-2D, MONAI model zoo: https://github.com/Project-MONAI/model-zoo/tree/dev/models/vista2d",
    # the reference setup (recipes/vista2d.toml): the checkpoint itself carries no settings
    "recipe": {
        "model": {"backbone": {"name": "sam", "variant": "vit_b", "resize_to": 1024}, "head": {"name": "vista2d"}},
        "infer": {
            "roi_size": [256, 256],
            "overlap": 0.625,
            "postprocessor": {"name": "cellpose", "niter": 200, "cellprob_threshold": 0.4,
                              "flow_threshold": 0.4, "min_size": 15},
        },
    },
}


def _sam(variant: str, file: str) -> dict:
    return {
        "url": f"https://dl.fbaipublicfiles.com/segment_anything/{file}",
        "description": f"Original SAM {variant} image encoder (segment-anything), for backbone.weights",
        "licence": "Apache-2.0",
        "citation": _SAM_CITATION,
    }


SAM_VIT_B = _sam("ViT-B", "sam_vit_b_01ec64.pth")
SAM_VIT_L = _sam("ViT-L", "sam_vit_l_0b3195.pth")
SAM_VIT_H = _sam("ViT-H", "sam_vit_h_4b8939.pth")
