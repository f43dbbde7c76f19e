"""vista2d_io: readers ("tiff", "png", "zarr") and writers ("tiff", "flows", "overlay", "rois", "geojson",
"zarr").

Modules: :mod:`.readers` (files and OME-Zarr folders -> ``Image`` with named axes, eager or lazy),
:mod:`.writers` (``Prediction`` -> files, streamed for labels larger than memory), :mod:`.contours` (one
polygon per label, block by block, shared by the ROI and GeoJSON writers), :mod:`.ngff` (OME-Zarr
metadata), :mod:`.regions` (block iteration) and :mod:`.atomic` (temporary file or folder, then rename).
See docs/io.md.
"""
