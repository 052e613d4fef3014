"""The standalone rendering node (`farmhand node`): the tutorial's API, hardened."""

from farmhand.node.app import FILE_STEM, NodeSettings, create_node_app
from farmhand.node.jobs import JobQueue, JobState, NodeJob, QueueFull

__all__ = [
    "FILE_STEM",
    "JobQueue",
    "JobState",
    "NodeJob",
    "NodeSettings",
    "QueueFull",
    "create_node_app",
]
