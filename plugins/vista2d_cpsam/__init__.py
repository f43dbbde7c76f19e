"""Cellpose-SAM (cellpose 4's ``CPSAM`` network) as vista2d plugins: backbone ``cpsam``, head ``cpsam``, the
reading of cellpose's weight files, and the model cards ``cpsam`` and ``cpsam_v2``."""
