from collections import Counter

import pytest

from farmhand.manager.scheduling.state import TASK_TRANSITIONS, derive_job_status
from farmhand.shared.schemas import JobStatus, TaskStatus

Q, A, C, F, X = (
    TaskStatus.QUEUED,
    TaskStatus.ACTIVE,
    TaskStatus.COMPLETED,
    TaskStatus.FAILED,
    TaskStatus.CANCELED,
)


@pytest.mark.parametrize(
    ("tasks", "expected"),
    [
        ([Q, Q], JobStatus.QUEUED),
        ([A, Q], JobStatus.ACTIVE),
        ([C, Q], JobStatus.ACTIVE),
        ([C, C], JobStatus.COMPLETED),
        ([C, F, Q], JobStatus.FAILED),
        ([], JobStatus.QUEUED),
    ],
)
def test_job_status_follows_tasks(tasks: list[TaskStatus], expected: JobStatus) -> None:
    assert derive_job_status(JobStatus.QUEUED, Counter(tasks)) is expected


def test_canceled_job_stays_canceled() -> None:
    assert derive_job_status(JobStatus.CANCELED, Counter([C, C])) is JobStatus.CANCELED


def test_finished_tasks_only_go_back_to_queue() -> None:
    for finished in (C, F, X):
        assert TASK_TRANSITIONS[finished] == {Q}
    assert C not in TASK_TRANSITIONS[Q], "a task must be active before it completes"
