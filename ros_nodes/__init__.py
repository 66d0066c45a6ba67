"""ROS 2 nodes and robot-interface adapters: the only layer that imports rclpy (layer 6).

Nodes are glue; the logic they call is plain Python tested without a ROS graph.
"""
