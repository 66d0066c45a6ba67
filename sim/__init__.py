"""Simulation: robot models, MuJoCo and PyBullet backends, gymnasium task envs, scripted experts (layer 3).

Tasks never import a policy class.
"""
