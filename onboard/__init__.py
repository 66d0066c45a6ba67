"""onboard: train robot policies in simulation, run them safely on real robots.

This package is the front door: the CLI (``onboard.cli``), config loading
(``onboard.config``) and the shared contracts (``onboard.spec``). Importing it
must stay cheap: it never imports torch, mujoco or rclpy.
"""

__version__ = "0.1.0"
