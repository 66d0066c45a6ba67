"""Calibration: camera intrinsics, hand-eye, joint offsets, IMU, latency (layer 1: numpy and cv2 only)."""
