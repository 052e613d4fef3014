"""The one HTTP client of the manager's REST API, shared by the CLI, worker and add-on."""

from farmhand.client.client import (
    BaseClient,
    FarmhandClient,
    JobPoll,
    OutputsDownload,
    ProgressCallback,
    RunnerClient,
    parse_retry_after,
)
from farmhand.client.errors import FarmhandError, ManagerUnreachable, is_retryable

__all__ = [
    "BaseClient",
    "FarmhandClient",
    "FarmhandError",
    "JobPoll",
    "ManagerUnreachable",
    "OutputsDownload",
    "ProgressCallback",
    "RunnerClient",
    "is_retryable",
    "parse_retry_after",
]
