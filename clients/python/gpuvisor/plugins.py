"""PluginRegistry (seeds 001 and 004) and ServicePlugin (seed 000, and 004's CloudAwarePlugin)."""
import os
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Dict, List, Optional

from ._http import GpuvisorError, as_client, quote


class PluginExecutionMode(Enum):
    """How a plugin executes (seed 004's values)."""
    IN_PROCESS = "in_process"
    SUBPROCESS = "subprocess"
    DOCKER = "docker"
    CONDA_ENV = "conda_env"
    EXTERNAL_SERVICE = "external_service"
    CLOUD_GPU = "cloud_gpu"
    CLOUD_VM = "cloud_vm"
    CLOUD_CONTAINER = "cloud_container"
    CLOUD_SERVERLESS = "cloud_serverless"
    CLOUD_CPU = "cloud_cpu"
    REMOTE_SSH = "remote_ssh"


LOCAL_MODES = {PluginExecutionMode.IN_PROCESS, PluginExecutionMode.SUBPROCESS,
               PluginExecutionMode.DOCKER, PluginExecutionMode.CONDA_ENV,
               PluginExecutionMode.EXTERNAL_SERVICE}

_SERVICE_MODES = {"process": PluginExecutionMode.SUBPROCESS,
                  "conda_env": PluginExecutionMode.CONDA_ENV,
                  "docker": PluginExecutionMode.DOCKER,
                  "external": PluginExecutionMode.EXTERNAL_SERVICE}


def mode_of_service(s) -> PluginExecutionMode:
    m = (s or {}).get("mode") or "process"
    if m in _SERVICE_MODES:
        return _SERVICE_MODES[m]
    try:
        return PluginExecutionMode(m)
    except ValueError:
        return PluginExecutionMode.SUBPROCESS


@dataclass
class RemoteResourceInfo:
    """Information about a remote/cloud resource (seed 004), from a remote service."""
    provider: str
    region: Optional[str] = None
    instance_id: Optional[str] = None
    job_id: Optional[str] = None
    endpoint_url: Optional[str] = None
    ssh_host: Optional[str] = None
    ssh_port: int = 22
    status: str = "unknown"
    resource_type: Optional[str] = None
    gpu_count: int = 0
    gpu_type: Optional[str] = None
    estimated_cost_per_hour: Optional[float] = None
    metadata: Dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_api(cls, r):
        return cls(provider=r.get("provider") or "", region=r.get("region"),
                   instance_id=r.get("instance_id"), endpoint_url=r.get("endpoint"),
                   ssh_host=r.get("ssh_host"), ssh_port=r.get("ssh_port") or 22,
                   status=r.get("status") or "unknown", gpu_count=r.get("gpu_count") or 0,
                   gpu_type=r.get("gpu_type"), estimated_cost_per_hour=r.get("cost_per_hour"),
                   metadata=dict(r))


@dataclass
class PluginMetadata:
    """Seed 004's PluginMetadata, from GET /api/v1/plugins."""
    name: str
    category: str
    title: str
    config_schema: Dict[str, Any] = field(default_factory=dict)
    description: Optional[str] = None
    version: Optional[str] = None
    is_configured: bool = False
    execution_mode: PluginExecutionMode = PluginExecutionMode.IN_PROCESS
    manages_child_processes: bool = False
    manages_external_resources: bool = False
    spawned_pids: List[int] = field(default_factory=list)
    container_id: Optional[str] = None
    conda_env_name: Optional[str] = None
    remote_resource: Optional[RemoteResourceInfo] = None
    # gpuvisor's own
    id: Optional[str] = None
    service: Optional[str] = None
    mode: Optional[str] = None  # http or worker
    active: bool = False

    def get_unique_id(self) -> str:
        return f"{self.category}_{self.name}"

    def is_local_execution(self) -> bool:
        return self.execution_mode in LOCAL_MODES

    def is_cloud_execution(self) -> bool:
        return not self.is_local_execution()

    def has_active_resources(self) -> bool:
        return bool(self.active or self.spawned_pids or self.container_id or self.remote_resource)

    @classmethod
    def from_api(cls, p):
        worker = p.get("worker") or {}
        if p.get("location") == "cloud":
            mode = PluginExecutionMode.CLOUD_GPU
        elif p.get("mode") == "worker":
            mode = PluginExecutionMode.CONDA_ENV if worker.get("conda_env") \
                else PluginExecutionMode.SUBPROCESS
        else:
            mode = PluginExecutionMode.EXTERNAL_SERVICE
        return cls(name=p["name"], category=p["category"], title=p.get("title") or p["name"],
                   config_schema=p.get("config_schema") or {},
                   description=p.get("description") or None, version=p.get("version") or None,
                   is_configured=bool(p.get("configured")), execution_mode=mode,
                   manages_child_processes=p.get("mode") == "worker",
                   manages_external_resources=bool(p.get("service")),
                   conda_env_name=worker.get("conda_env"), id=p.get("id"),
                   service=p.get("service"), mode=p.get("mode"), active=bool(p.get("active")))


class PluginRegistry:
    """Seed 001's PluginRegistryProtocol plus seed 004's read and config methods, over
    gpuvisor's plugin manifests. Configs are validated by the daemon against the plugin's JSON
    Schema; ``save_plugin_config`` raises GpuvisorError (``.violations``: each path) for a
    config the schema rejects."""

    def __init__(self, url=None, token=None, client=None):
        self.client = as_client(client, url, token)

    def _list(self, **query):
        return self.client.get("/api/v1/plugins", query=query or None)

    def get_all_plugins(self) -> List[PluginMetadata]:
        return [PluginMetadata.from_api(p) for p in self._list()["plugins"]]

    def get_plugins_by_category(self, category: Any) -> List[PluginMetadata]:
        category = getattr(category, "value", category)
        return [PluginMetadata.from_api(p) for p in self._list(category=category)["plugins"]]

    def get_plugin(self, plugin_id: str) -> Optional[PluginMetadata]:
        try:
            return PluginMetadata.from_api(self.client.get(f"/api/v1/plugins/{quote(plugin_id)}"))
        except GpuvisorError as e:
            if e.status in (400, 404):
                return None
            raise

    def get_categories(self) -> List[str]:
        return sorted(self._list().get("categories", {}))

    def get_category_display_name(self, category: str) -> str:
        return self._list().get("categories", {}).get(category, category)

    def get_categories_with_plugins(self) -> List[str]:
        return sorted({p.category for p in self.get_all_plugins()})

    def load_plugin_config(self, plugin_id: str) -> Dict[str, Any]:
        """The saved config, or the schema's defaults; {} for an unknown plugin."""
        try:
            return self.client.get(f"/api/v1/plugins/{quote(plugin_id)}/config")["config"]
        except GpuvisorError as e:
            if e.status in (400, 404):
                return {}
            raise

    def save_plugin_config(self, plugin_id: str, config: Dict[str, Any]) -> bool:
        self.client.request("PUT", f"/api/v1/plugins/{quote(plugin_id)}/config", body=config)
        return True

    def delete_plugin_config(self, plugin_id: str) -> bool:
        try:
            self.client.request("DELETE", f"/api/v1/plugins/{quote(plugin_id)}/config")
            return True
        except GpuvisorError as e:
            if e.status == 404:
                return False
            raise


def _descendants(pid: int) -> List[int]:
    """pid's live descendants, from /proc/PID/task/*/children (local services only)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        try:
            tasks = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        for t in tasks:
            try:
                with open(f"/proc/{p}/task/{t}/children") as f:
                    kids = [int(x) for x in f.read().split()]
            except OSError:
                continue
            for k in kids:
                if k not in out:
                    out.append(k)
                    todo.append(k)
    return out


class ServicePlugin:
    """Seed 000's LifecycleAwarePlugin over one gpuvisor service; for a remote service also
    seed 004's CloudAwarePlugin, with the cost from gpuvisor's accounting."""

    def __init__(self, name: str, url=None, token=None, client=None):
        self.name = name
        self.client = as_client(client, url, token)

    def _service(self) -> Dict[str, Any]:
        return self.client.get(f"/api/v1/services/{quote(self.name)}")

    def get_execution_mode(self) -> PluginExecutionMode:
        return mode_of_service(self._service())

    def get_child_pids(self) -> List[int]:
        """The service's whole process tree: its main process and every descendant."""
        pid = self._service().get("pid") or 0
        return [pid] + _descendants(pid) if pid else []

    def get_managed_resources(self) -> Dict[str, Any]:
        s = self._service()
        return {"service": s["name"], "state": s["state"], "pid": s.get("pid") or None,
                "is_running": s["state"] in ("starting", "ready", "busy", "unknown"),
                "gpu": s.get("gpu"), "vram_mb": s.get("vram_mb"),
                "measured_vram_bytes": s.get("measured_vram_bytes"),
                "container_id": s.get("container"), "remote": s.get("remote"),
                "health": s.get("health")}

    def force_cleanup(self) -> None:
        """Stop without grace (SIGKILL to the whole tree)."""
        self.client.post(f"/api/v1/services/{quote(self.name)}/stop", query={"force": "true"})

    # --- CloudAwarePlugin ---------------------------------------------------------------------

    def get_remote_resource_info(self) -> Optional[RemoteResourceInfo]:
        remote = self._service().get("remote") or {}
        res = remote.get("resource")
        return RemoteResourceInfo.from_api(res) if res else None

    def provision_remote_resource(self, **config) -> RemoteResourceInfo:
        """Ensure the service (for a remote one: rent and start its instance)."""
        query = {"timeout": config.get("timeout", "30m")}
        self.client.post(f"/api/v1/services/{quote(self.name)}/ensure", query=query)
        info = self.get_remote_resource_info()
        return info if info is not None else RemoteResourceInfo(provider="local", status="running")

    def check_remote_resource_status(self) -> str:
        info = self.get_remote_resource_info()
        return info.status if info else "stopped"

    def terminate_remote_resource(self) -> bool:
        self.client.post(f"/api/v1/services/{quote(self.name)}/stop")
        return True

    def estimate_cost(self, duration_hours: float) -> float:
        info = self.get_remote_resource_info()
        rate = info.estimated_cost_per_hour if info else None
        return float(rate or 0.0) * float(duration_hours)

    def get_total_cost(self) -> float:
        """What the service has cost so far, all instances (gpuvisor's accounting)."""
        return float((self._service().get("remote") or {}).get("cost_usd") or 0.0)
