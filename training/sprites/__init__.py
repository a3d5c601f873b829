"""The DSAE on video, the Sprites characters of the paper (`vc-train --data sprites`, `models/sprites`).

`video`: convolutional frame coders for 64x64 RGB frames (the DSAE's `frame_coder="conv64"`); `data`: the
render cache (training.data.sprites) as a training set and the video model's defaults; `judge`: the
attribute classifier that scores generated sequences; `evaluate`: the paper's measures; `export`: the
image-shaped ONNX export behind `vc-export`.
"""
