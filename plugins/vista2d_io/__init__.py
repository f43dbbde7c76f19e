"""vista2d_io: readers ("tiff", "png") and writers ("tiff", "flows", "overlay", "rois", "geojson").

Modules: :mod:`.readers` (files -> ``Image``), :mod:`.writers` (``Prediction`` -> files),
:mod:`.contours` (one polygon per label, shared by the ROI and GeoJSON writers) and :mod:`.atomic`
(the temporary-file-then-rename helper every writer uses). See docs/io.md.
"""
