"""Diffusion policy (BC): the schedule (numpy), the 1-D temporal U-Net and its trainer (torch).

``policies.diffusion.schedule`` is numpy only, so the sampler and the runtime can
share it; ``unet`` and ``train`` import torch and are never on the robot path.
Importing this package imports nothing heavy.
"""
