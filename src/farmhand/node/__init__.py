"""The standalone rendering node (`farmhand node`): the tutorial's API, hardened."""

from farmhand.node.app import FILE_STEM, NodeSettings, create_node_app
from farmhand.node.jobs import Cancel, JobQueue, JobState, NodeJob, QueueFull

__all__ = [
    "FILE_STEM",
    "Cancel",
    "JobQueue",
    "JobState",
    "NodeJob",
    "NodeSettings",
    "QueueFull",
    "create_node_app",
]
