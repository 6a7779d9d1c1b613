"""ResourceManager: seed 003's class (cjm-fasthtml-resources) over gpuvisor's worker registry,
GPU views and VRAM leases. The state lives in the daemon, so every process sees the same
workers, and gpuvisor's planner counts them."""
import contextlib
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Dict, List, Optional, Set

from ._http import GpuvisorError, as_client


class _Clear:
    """The value that clears a field in update_worker_state (sent as JSON null)."""
    _instance = None

    def __new__(cls):
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self):
        return "gpuvisor.CLEAR"

    def __bool__(self):
        return False


CLEAR = _Clear()


class ResourceType(Enum):
    """Types of resources to monitor."""
    GPU_MEMORY = "gpu_memory"
    SYSTEM_MEMORY = "system_memory"


class ResourceStatus(Enum):
    """Status of resource availability (gpuvisor's per-GPU ``state``)."""
    AVAILABLE = "available"
    APP_BUSY = "app_busy"
    EXTERNAL_BUSY = "external_busy"


@dataclass
class ResourceConflict:
    """Information about a resource conflict (one GPU, or all of them together)."""
    resource_type: ResourceType
    status: ResourceStatus
    app_pids: List[int]
    external_pids: List[int]
    app_processes: List[Dict[str, Any]]
    external_processes: List[Dict[str, Any]]
    gpu: Optional[int] = None


@dataclass
class WorkerState:
    """State of a worker process: seed 003's fields, read from GET /api/v1/workers."""
    pid: int
    worker_type: str
    job_id: Optional[str] = None
    plugin_id: Optional[str] = None
    plugin_name: Optional[str] = None
    loaded_plugin_resource: Optional[str] = None
    config: Optional[Dict[str, Any]] = None
    status: str = "idle"
    execution_mode: Optional[str] = None
    child_pids: List[int] = field(default_factory=list)
    container_id: Optional[str] = None
    conda_env: Optional[str] = None
    is_remote: bool = False
    remote_resource: Optional[Dict[str, Any]] = None
    # gpuvisor's own: the registry id (outside-<pid>, worker-<plugin>-<n>) and whether the app
    # registered it (True) or gpuvisor runs it.
    id: Optional[str] = None
    outside: bool = False
    gpu: Optional[int] = None

    @classmethod
    def from_api(cls, w):
        pid = w.get("pid") or 0
        pids = w.get("pids") or []
        if w.get("remote"):
            mode = "cloud"
        elif w.get("container"):
            mode = "docker"
        elif w.get("conda_env"):
            mode = "conda_env"
        else:
            mode = "subprocess"
        job = w.get("job")
        return cls(pid=pid, worker_type=w.get("type") or "", job_id=None if job is None else str(job),
                   plugin_id=w.get("plugin"), plugin_name=w.get("plugin_name"),
                   loaded_plugin_resource=w.get("loaded_resource"), config=w.get("config"),
                   status=w.get("status") or "idle", execution_mode=mode,
                   child_pids=[p for p in pids if p != pid], container_id=w.get("container"),
                   conda_env=w.get("conda_env"), is_remote=bool(w.get("remote")),
                   remote_resource={"service": w["remote"]} if w.get("remote") else None,
                   id=w.get("id"), outside=bool(w.get("outside")), gpu=w.get("gpu"))


@dataclass
class Lease:
    """A VRAM lease (POST /api/v1/leases)."""
    id: int
    vram_bytes: int
    gpu: int
    pid: Optional[int] = None
    holder: Optional[str] = None
    created_unix_ms: Optional[int] = None
    expires_unix_ms: Optional[int] = None

    @property
    def vram_mb(self):
        return self.vram_bytes // (1 << 20)

    @classmethod
    def from_api(cls, d):
        names = cls.__dataclass_fields__
        return cls(**{k: v for k, v in d.items() if k in names})


class ResourceManager:
    """Seed 003's ResourceManager, backed by the gpuvisor daemon.

    Workers registered here go into gpuvisor's worker registry: their processes (and their
    descendants) count as the app's own in every GPU view, the planner counts their memory and
    names them in refusals, and a worker whose process exits is removed by the daemon itself.

    ``gpu_memory_threshold_percent`` is accepted for signature compatibility; the threshold
    that decides ``external_busy`` is the daemon's ``daemon.external_busy_percent``.
    """

    def __init__(self, gpu_memory_threshold_percent: float = 45.0, url=None, token=None,
                 client=None):
        self.gpu_memory_threshold_percent = gpu_memory_threshold_percent
        self.client = as_client(client, url, token)

    # --- workers ------------------------------------------------------------------------------

    def register_worker(self, pid: int, worker_type: str, plugin_id: Optional[str] = None,
                        plugin_name: Optional[str] = None,
                        config: Optional[Dict[str, Any]] = None,
                        plugin_instance: Any = None) -> None:
        """Register a worker process (POST /api/v1/workers). With a ``plugin_instance`` that
        implements LifecycleAwarePlugin, its child PIDs need no registering: gpuvisor counts
        the worker's descendants as its own already, and the instance's execution mode and
        managed resources are kept in this process only (see ``plugin_instances``)."""
        body = {"pid": int(pid), "worker_type": worker_type}
        if plugin_id is not None:
            body["plugin_id"] = plugin_id
        if plugin_name is not None:
            body["plugin_name"] = plugin_name
        if config is not None:
            body["config"] = config
        self.client.post("/api/v1/workers", body)
        if plugin_instance is not None:
            self.plugin_instances[int(pid)] = plugin_instance

    @property
    def plugin_instances(self) -> Dict[int, Any]:
        if not hasattr(self, "_plugin_instances"):
            self._plugin_instances = {}
        return self._plugin_instances

    def unregister_worker(self, pid: int) -> None:
        """Unregister a worker (DELETE /api/v1/workers/{pid}); its process keeps running.
        A worker that is not registered (already gone) is not an error, as in the seed."""
        self.plugin_instances.pop(int(pid), None)
        try:
            self.client.request("DELETE", f"/api/v1/workers/{int(pid)}")
        except GpuvisorError as e:
            if e.status != 404:
                raise

    def update_worker_state(self, pid: int, status: Optional[str] = None,
                            job_id: Optional[str] = None, plugin_name: Optional[str] = None,
                            plugin_id: Optional[str] = None,
                            loaded_plugin_resource: Optional[str] = None,
                            config: Optional[Dict[str, Any]] = None) -> None:
        """Update worker state (PATCH /api/v1/workers/{pid}).

        As in seed 003, ``None`` (the default) leaves a field unchanged. To clear a field pass
        ``gpuvisor.CLEAR`` (sent as JSON null). One exception keeps seed 001's example
        working: ``status="idle"`` with ``job_id=None`` clears the job, since an idle worker
        runs none. ``status`` cannot be cleared. Unknown PIDs are ignored, as in the seed."""
        fields = {"status": status, "job_id": job_id, "plugin_name": plugin_name,
                  "plugin_id": plugin_id, "loaded_plugin_resource": loaded_plugin_resource,
                  "config": config}
        body = {}
        for name, value in fields.items():
            if value is CLEAR:
                body[name] = None
            elif value is not None:
                body[name] = str(value) if name == "job_id" else value
        if status == "idle" and job_id is None:
            body["job_id"] = None
        try:
            self.client.request("PATCH", f"/api/v1/workers/{int(pid)}", body=body)
        except GpuvisorError as e:
            if e.status != 404:
                raise

    def get_all_workers(self) -> List[WorkerState]:
        """Every worker gpuvisor knows: the app's (outside) workers and its own job workers."""
        return [WorkerState.from_api(w) for w in self.client.get("/api/v1/workers")["workers"]]

    def get_worker_by_pid(self, pid: int) -> Optional[WorkerState]:
        return next((w for w in self.get_all_workers() if w.pid == int(pid)), None)

    def get_worker_by_job(self, job_id: str) -> Optional[WorkerState]:
        return next((w for w in self.get_all_workers()
                     if w.job_id is not None and w.job_id == str(job_id)), None)

    def get_active_worker_types(self) -> Set[str]:
        return {w.worker_type for w in self.get_all_workers()}

    def get_all_related_pids(self, pid: int) -> List[int]:
        """The worker's PID and the live processes that are its own (its descendants)."""
        w = self.get_worker_by_pid(pid)
        if w is None:
            return []
        return [w.pid] + [p for p in w.child_pids if p != w.pid]

    def get_all_app_pids_including_children(self) -> Set[int]:
        pids = set()
        for w in self.get_all_workers():
            if w.pid:
                pids.add(w.pid)
            pids.update(w.child_pids)
        return pids

    def get_app_pids(self) -> Set[int]:
        return {w.pid for w in self.get_all_workers() if w.pid}

    # --- GPU status and conflicts ------------------------------------------------------------

    def get_gpu_processes(self) -> List[Dict[str, Any]]:
        """Every process holding GPU memory (GET /api/v1/processes), ``external`` marked."""
        return self.client.get("/api/v1/processes")["processes"]

    def get_gpu_status(self) -> Dict[str, Any]:
        """GET /api/v1/resources: each GPU with its state and who holds it, system memory."""
        return self.client.get("/api/v1/resources")

    def is_external(self, pid: int) -> Optional[bool]:
        """Whether a PID on a GPU is external (None: it holds no GPU memory)."""
        rows = [p for p in self.get_gpu_processes() if p["pid"] == int(pid)]
        return None if not rows else all(p["external"] for p in rows)

    def check_gpu_availability(self, gpu: Optional[int] = None) -> ResourceConflict:
        """The conflict status of one GPU, or of all together (the worst state wins)."""
        gpus = self.get_gpu_status()["gpus"]
        if gpu is not None:
            gpus = [g for g in gpus if g["index"] == gpu]
            if not gpus:
                raise GpuvisorError(404, "not_found", f"no GPU {gpu}")
        order = [ResourceStatus.AVAILABLE, ResourceStatus.APP_BUSY, ResourceStatus.EXTERNAL_BUSY]
        status = max((ResourceStatus(g["state"]) for g in gpus), key=order.index,
                     default=ResourceStatus.AVAILABLE)
        app = [p for g in gpus for p in g["app"]]
        ext = [p for g in gpus for p in g["external"]]
        return ResourceConflict(ResourceType.GPU_MEMORY, status,
                                sorted({p["pid"] for p in app}), sorted({p["pid"] for p in ext}),
                                app, ext, gpu)

    def get_resource_conflicts(self) -> List[ResourceConflict]:
        """One entry per GPU that is external_busy."""
        return [c for c in (self.check_gpu_availability(g["index"])
                            for g in self.get_gpu_status()["gpus"])
                if c.status == ResourceStatus.EXTERNAL_BUSY]

    # --- VRAM leases -------------------------------------------------------------------------

    def acquire_lease(self, vram_mb: int, gpu: Optional[int] = None, ttl=None,
                      pid: Optional[int] = None, holder: Optional[str] = None) -> Lease:
        """POST /api/v1/leases. A lease that cannot fit raises GpuvisorError (409) naming what
        is in the way. ``ttl``: seconds, or a duration string (``"10m"``)."""
        body = {"vram_mb": int(vram_mb)}
        for k, v in (("gpu", gpu), ("ttl", ttl), ("pid", pid), ("holder", holder)):
            if v is not None:
                body[k] = v
        return Lease.from_api(self.client.post("/api/v1/leases", body))

    def release_lease(self, lease) -> None:
        lid = lease.id if isinstance(lease, Lease) else int(lease)
        try:
            self.client.request("DELETE", f"/api/v1/leases/{lid}")
        except GpuvisorError as e:
            if e.status != 404:  # ended already (ttl, pid exit)
                raise

    def get_leases(self) -> List[Lease]:
        return [Lease.from_api(d) for d in self.client.get("/api/v1/leases")["leases"]]

    @contextlib.contextmanager
    def reserve_vram(self, vram_mb: int, gpu: Optional[int] = None, ttl=None,
                     pid: Optional[int] = None, holder: Optional[str] = None):
        """Reserve GPU memory for the ``with`` block; yields the Lease, released on exit.

            with rm.reserve_vram(8192, holder="notebook") as lease:
                model = load_model()   # no placement hands this memory to a service meanwhile
        """
        lease = self.acquire_lease(vram_mb, gpu, ttl, pid, holder)
        try:
            yield lease
        finally:
            self.release_lease(lease)
