"""Sim-to-real: domain randomization, actuator/latency/noise models, the safety filter, sysid (layer 4)."""
