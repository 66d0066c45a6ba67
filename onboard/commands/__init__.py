"""One module per CLI verb. Each defines ``HELP``, ``add_arguments(parser)`` and ``run(args) -> int``.

Verb modules import their heavy dependencies (torch, mujoco, rclpy) inside
``run`` so that ``onboard --help`` stays fast.
"""
