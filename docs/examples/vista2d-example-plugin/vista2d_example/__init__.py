"""Example third-party plugin package for vista2d (see docs/plugins.md)."""
