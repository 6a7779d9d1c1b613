"""JobClient: gpuvisor's durable job queue (POST /api/v1/plugins/{id}/jobs and /api/v1/jobs)."""
from typing import Any, Dict, Iterator, List, Optional

from ._http import as_client, quote
from .events import Event, parse_sse, to_event

FINAL_STATES = ("completed", "failed", "cancelled")


class JobClient:
    """Submit jobs to a plugin and follow them. Jobs are stored by the daemon (SQLite, fsynced
    before ``submit`` returns), so they survive the app and the daemon restarting."""

    def __init__(self, url=None, token=None, client=None):
        self.client = as_client(client, url, token)

    def submit(self, plugin_id: str, input: Any = None) -> Dict[str, Any]:
        """Queue a job; returns the job object (state ``pending``)."""
        return self.client.post(f"/api/v1/plugins/{quote(plugin_id)}/jobs",
                                input if input is not None else {})

    def get(self, job_id) -> Dict[str, Any]:
        return self.client.get(f"/api/v1/jobs/{int(job_id)}")

    def result(self, job_id) -> Any:
        """The result of a completed job; GpuvisorError 409 while it is not completed."""
        return self.client.get(f"/api/v1/jobs/{int(job_id)}/result")["result"]

    def list(self, state: Optional[str] = None, plugin: Optional[str] = None,
             limit: Optional[int] = None) -> List[Dict[str, Any]]:
        return self.client.get("/api/v1/jobs", query={"state": state, "plugin": plugin,
                                                      "limit": limit})["jobs"]

    def cancel(self, job_id) -> Dict[str, Any]:
        """Cancel a pending or running job; returns the job as it ended."""
        return self.client.post(f"/api/v1/jobs/{int(job_id)}/cancel")

    def stream(self, job_id, timeout: Optional[float] = None) -> Iterator[Event]:
        """The job's events until it ends (GET /api/v1/jobs/{id}/stream): first ``job`` (the
        job as it is), then ``job.chunk`` (``data["data"]``: a piece of output),
        ``job.progress`` (``data["progress"]``), ``job.started`` ..., and last ``job`` with the
        job as it ended (``result`` or ``error``)."""
        resp = self.client.open("GET", f"/api/v1/jobs/{int(job_id)}/stream",
                                headers={"Accept": "text/event-stream"}, timeout=timeout or 60)
        with resp:
            for frame in parse_sse(iter(resp.readline, b"")):
                yield to_event(*frame)

    def wait(self, job_id, timeout: Optional[float] = None) -> Dict[str, Any]:
        """Follow the stream to the end; the job as it ended."""
        last = None
        for ev in self.stream(job_id, timeout):
            if ev.type == "job":
                last = ev.data
        return last if last is not None else self.get(job_id)
