"""vista2d plugin: model cards of the official VISTA2D checkpoint and the original SAM image encoders."""
