"""vista2d_io: readers ("tiff", "png", "zarr") and writers ("tiff", "flows", "overlay", "rois", "geojson",
"zarr").

Modules: :mod:`.readers` (files and OME-Zarr folders -> ``Image`` with named axes, eager or lazy),
:mod:`.writers` (``Prediction`` -> files, streamed for labels larger than memory), :mod:`.contours` (one
polygon per label, block by block, shared by the ROI and GeoJSON writers), :mod:`.ngff` (OME-Zarr
metadata) and :mod:`.regions` (block iteration); files are written atomically through
:mod:`vista2d_core.files`.
See docs/io.md.
"""
