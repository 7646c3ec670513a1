"""transferpilot: decide how to transfer an ImageNet-pretrained CNN to your images, then do it.

The library computes and never imports Prefect or DVC; ``transferpilot.stages``
does the I/O of each pipeline stage; the CLI, Prefect tasks and flows adapt.
"""

__version__ = "0.1.0"
