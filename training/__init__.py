"""Procedural training data for nodegraph's tiny demo models.

The demo VAE, text encoder, UNet, ControlNet and upscaler are trained on
images of one coloured shape on a plain background (:mod:`training.shapes`).
The world is small on purpose: a CPU can learn it in minutes, and an image
can be graded automatically (:mod:`training.checker`), so tests can check
that a generated picture really shows what its prompt asked for.

Importing this package imports nothing; each module pulls in only numpy,
Pillow, OpenCV and SciPy, never torch.
"""
