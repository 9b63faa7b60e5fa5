"""Generations in progress: each job's status, derived from the clock when it is asked.

Nothing runs in the background. A job is `Waiting` for the first third of the generation
time, `Generating` until it is over, then ends with its outcome (`Done`, or what a test
asked for). A test can also force a status at any moment; forcing None returns the job to
its timeline.
"""

from __future__ import annotations

import re
import time

import attrs

WAITING, GENERATING, DONE = "Waiting", "Generating", "Done"
# The share of the generation time a job spends Waiting before it is Generating.
_WAITING_SHARE = 1 / 3
# A prompt containing "fake-status:<Status>" makes its task's first job end with <Status>.
STATUS_MARKER = re.compile(r"fake-status:([A-Za-z][A-Za-z_-]*)")


@attrs.frozen
class Ticket:
    """What a submit answers about its generation: the subscription key and job uuids."""

    subscription_key: str
    job_uuids: tuple[str, ...]


@attrs.define
class Job:
    """One job of a generation: its uuid, how it ends, and a status forced by a test."""

    uuid: str
    outcome: str = DONE
    forced: str | None = None


@attrs.define
class Generation:
    """The jobs of one submitted task, all started at `submitted` and lasting `duration`."""

    subscription_key: str
    jobs: list[Job]
    duration: float
    submitted: float = attrs.field(factory=time.monotonic)

    def statuses(self, now: float | None = None) -> list[tuple[str, str]]:
        """Each job's (uuid, status) at `now` (monotonic seconds; the present by default)."""
        elapsed = (time.monotonic() if now is None else now) - self.submitted
        return [(job.uuid, self._status(job, elapsed)) for job in self.jobs]

    def _status(self, job: Job, elapsed: float) -> str:
        if job.forced is not None:
            return job.forced
        if elapsed < self.duration * _WAITING_SHARE:
            return WAITING
        return GENERATING if elapsed < self.duration else job.outcome

    @property
    def ticket(self) -> Ticket:
        """The subscription key and job uuids, safe to hand out of the state's lock."""
        return Ticket(self.subscription_key, tuple(job.uuid for job in self.jobs))

    @property
    def ready(self) -> bool:
        """Whether every job is Done, so the task's result files are listed."""
        return all(status == DONE for _, status in self.statuses())


def marked_outcome(prompt: str | None) -> str | None:
    """The status a prompt asks its first job to end with (`fake-status:Failed`), if any."""
    match = STATUS_MARKER.search(prompt or "")
    return None if match is None else match.group(1)
