"""Image bytes <-> pixels: the strict PNG reader (png: container and CRCs; png_unfilter: the compiled row
filters), decode (PNG or JPEG under any name -> (H, W) uint8, resized to a model's input; one bad image becomes one
error, never an exception for the chunk), and png_encode (the PNG writer `tilescope synth` uses).

Bottom floor of xray/: imports nothing else from tilescope.
"""
