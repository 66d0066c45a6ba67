"""Shared contracts: the robot profile and the policy contract (layer 2; numpy + yaml only)."""
from onboard.spec.robot import RobotProfile, load_robot
from onboard.spec.contract import PolicyContract, CONTRACT_KEY

__all__ = ["RobotProfile", "load_robot", "PolicyContract", "CONTRACT_KEY"]
