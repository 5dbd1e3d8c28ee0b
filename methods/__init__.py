"""Built-in method plugins; each module registers itself with ``bench.registry.register``.

Modules here import torch/recbole inside functions so that ``reasonrec ls`` stays light.
"""
