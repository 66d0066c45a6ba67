"""A small vision-language-action (VLA) policy: tokenizer, model, training, export, runtime.

``tokenizer`` and ``runtime`` import numpy and onnxruntime only (the robot path);
``model``, ``train`` and ``export`` import torch and are never imported by the runtime.
"""
