"""Policies: networks, training, datasets, ONNX export and the one runtime (layer 5).

``policies.runtime`` and ``policies.sampler`` never import torch: they are the
robot path. Training modules import torch.
"""
