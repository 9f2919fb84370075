"""The Ray Job Submission API of one cluster, its errors translated into the project's."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

from jobs.work import (
    POLL_S,
    TERMINAL,
    ClusterError,
    JobNotFoundError,
    Work,
    WorkExistsError,
    next_attempt,
    resolve_address,
    submission_id,
)

if TYPE_CHECKING:  # imported when a command runs: `climate --help` stays fast
    from ray.job_submission import JobDetails, JobSubmissionClient

T = TypeVar("T")


@contextmanager
def _environ_without(names: tuple[str, ...]) -> Iterator[None]:
    """Ray's client lets RAY_ADDRESS / RAY_API_SERVER_ADDRESS override the address it is given;
    hide them while it is built so the address resolved here is the one used."""
    saved = {name: os.environ.pop(name) for name in names if name in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


class Cluster:
    """The job API of one cluster; Ray's errors become :class:`ClusterError` naming the
    address, or :class:`JobNotFoundError`."""

    def __init__(self, client: JobSubmissionClient, url: str) -> None:
        self.client = client
        self.url = url

    @classmethod
    def connect(cls, address: str | None) -> Cluster:
        """Reach the job API at ``address`` (else RAY_ADDRESS, else 127.0.0.1:8265).

        Raises
        ------
        ClusterError
            Nothing answers there, or it is not a Ray job API.
        """
        url = resolve_address(address, os.environ)
        import logging

        from ray.exceptions import AuthenticationError, RayError
        from ray.job_submission import JobSubmissionClient

        # Ray's client logs every packaging step at INFO; what matters is printed here.
        for name in ("ray", "ray.dashboard.modules.dashboard_sdk", "ray.dashboard.modules.job.sdk"):
            logging.getLogger(name).setLevel(logging.WARNING)
        try:
            with _environ_without(("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS")):
                client = JobSubmissionClient(url)
        except AuthenticationError as exc:
            raise ClusterError(
                f"the Ray job API at {url} requires token authentication and refused this "
                "client's token (or got none): export RAY_AUTH_MODE=token and give the "
                "cluster's token in RAY_AUTH_TOKEN or ~/.ray/auth_token (`ray get-auth-token` "
                "on the head prints it)"
            ) from exc
        except (OSError, RuntimeError, ValueError, RayError) as exc:
            # host:port without a scheme is taken for a GCS address and looked up through it
            gcs = "" if "://" in url else " (an address without http:// is a GCS address)"
            raise ClusterError(
                f"cannot reach the Ray job API at {url}{gcs} ({type(exc).__name__}: {exc}); "
                "start a cluster with `ray start --head` (its dashboard serves the job API on "
                "port 8265) or give its address: --address http://HEAD:8265 or RAY_ADDRESS"
            ) from exc
        return cls(client, url)

    def _call(self, what: str, call: Callable[[], T], job_id: str | None = None) -> T:
        from ray.exceptions import RayError

        try:
            return call()
        except RuntimeError as exc:
            # Ray's client says only "Request failed with status code 404: ...".
            if job_id is not None and "status code 404" in str(exc):
                raise JobNotFoundError(
                    f"no job {job_id!r} on {self.url}: `climate jobs list --address "
                    f"{self.url}` shows the submission ids there"
                ) from exc
            raise ClusterError(f"{what} on {self.url} failed: {exc}") from exc
        except (OSError, ValueError, RayError) as exc:
            raise ClusterError(
                f"{what} on {self.url} failed ({type(exc).__name__}: {exc}); check that the "
                "cluster is still up (`ray status`) and the address"
            ) from exc

    def jobs(self) -> list[JobDetails]:
        return self._call("listing jobs", self.client.list_jobs)

    def info(self, job_id: str) -> JobDetails:
        return self._call("reading the job", lambda: self.client.get_job_info(job_id), job_id)

    def status(self, job_id: str) -> str:
        return str(self.info(job_id).status)

    def logs(self, job_id: str) -> str:
        return self._call("reading logs", lambda: self.client.get_job_logs(job_id), job_id)

    def stop(self, job_id: str) -> bool:
        return self._call("stopping the job", lambda: self.client.stop_job(job_id), job_id)

    def follow(self, job_id: str, write: Callable[[str], object]) -> None:
        """Write the job's logs as they come, until the job ends."""
        import asyncio

        async def tail() -> None:
            async for chunk in self.client.tail_job_logs(job_id):
                write(chunk)

        self.info(job_id)  # an unknown id fails here, with its fix
        self._call("following logs", lambda: asyncio.run(tail()), job_id)

    def wait(self, job_id: str, timeout_s: float | None = None, poll_s: float = POLL_S) -> str:
        """Poll every ``poll_s`` until the job ends or ``timeout_s`` passes; returns its
        status then."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while (status := self.status(job_id)) not in TERMINAL:
            if deadline is not None and time.monotonic() > deadline:
                break
            time.sleep(poll_s)
        return status

    def submit(self, work: Work, env: dict[str, Any]) -> str:
        """Submit ``work`` under its next attempt; returns the submission id.

        Raises
        ------
        WorkExistsError
            An attempt of the same work is pending, running or succeeded (or one was submitted
            by someone else between the listing and this submission).
        """
        existing = {j.submission_id: str(j.status) for j in self.jobs() if j.submission_id}
        job_id = submission_id(work.prefix, next_attempt(work.prefix, existing))
        resources = work.resources

        def post() -> str:
            return self.client.submit_job(
                entrypoint=work.entrypoint,
                submission_id=job_id,
                runtime_env=env,
                metadata=work.metadata(),
                entrypoint_num_cpus=resources.cpus or None,
                entrypoint_num_gpus=resources.gpus or None,
            )

        try:
            return self._call("submitting the job", post)
        except ClusterError as exc:
            if "already exists" in str(exc.__cause__):
                raise WorkExistsError(
                    f"{job_id} was submitted by someone else meanwhile: submit again for the "
                    "next attempt, or see `climate jobs list`"
                ) from exc
            raise
