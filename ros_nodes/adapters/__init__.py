"""Robot-interface adapters: how a policy command becomes a driver's message.

``ros2_control``: forward position controller and JointTrajectoryController
(std_msgs / trajectory_msgs, always available). Vendor-message adapters
(franka_msgs, control_msgs actions) activate only when their package imports.
"""
