"""vista2d plugin: SAM ViT image encoders as the ``sam`` backbone."""
