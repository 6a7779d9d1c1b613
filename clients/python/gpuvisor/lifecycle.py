"""LifecycleManager and ServiceState: seed 002's classes over gpuvisor's services."""
import asyncio
from enum import Enum
from typing import Any, Dict, List, Optional

from ._http import GpuvisorError, as_client, quote


class ServiceState(Enum):
    """Current state of a service. The values are seed 002's and gpuvisor's alike."""
    UNKNOWN = "unknown"
    STOPPED = "stopped"
    STARTING = "starting"
    READY = "ready"
    BUSY = "busy"
    STOPPING = "stopping"
    ERROR = "error"
    SLEEPING = "sleeping"  # gpuvisor's own: put to sleep by its hook, woken by the next ensure

    @classmethod
    def from_api(cls, state: Optional[str]) -> "ServiceState":
        try:
            return cls(state)
        except ValueError:
            return cls.UNKNOWN


class LifecycleManager:
    """Seed 002's LifecycleManager; gpuvisor starts, stops and health-checks the services of
    its config, so there is no ``services`` dict to pass. ``ensure_service`` goes through the
    planner: it may evict lower-priority services, and it refuses when the memory is held by
    something it may not stop (an outside worker, a lease, an external process).

    As in the seed, ``ensure_service`` and ``stop_service`` return a bool. The reason of a
    failure is kept: ``last_error(name)`` returns the GpuvisorError (with the planner's
    refusal as its message), or pass ``raise_errors=True`` to get it raised instead."""

    def __init__(self, services=None, url=None, token=None, client=None, raise_errors=False,
                 timeout: str = "5m"):
        self.client = as_client(client, url, token)
        self.raise_errors = raise_errors
        self.timeout = timeout
        self._errors: Dict[str, GpuvisorError] = {}
        self._only = list(services) if services else None

    # --- reads --------------------------------------------------------------------------------

    def get_service(self, service_name: str) -> Optional[Dict[str, Any]]:
        """The service object (docs/api.md), or None for an unknown one."""
        try:
            return self.client.get(f"/api/v1/services/{quote(service_name)}")
        except GpuvisorError as e:
            if e.status == 404:
                return None
            raise

    @property
    def services(self) -> Dict[str, Dict[str, Any]]:
        """Every configured service by name (the daemon's config is the registry)."""
        out = {s["name"]: s for s in self.client.get("/api/v1/services")["services"]}
        return {k: v for k, v in out.items() if self._only is None or k in self._only}

    def get_state(self, service_name: str) -> ServiceState:
        """The service's state now (the daemon's, not a per-process cache)."""
        s = self.get_service(service_name)
        return ServiceState.UNKNOWN if s is None else ServiceState.from_api(s["state"])

    def get_services_for_phase(self, phase: int) -> List[str]:
        """Service names required for a pipeline phase, in config order."""
        return [n for n, s in self.services.items() if phase in (s.get("phases") or [])]

    def last_error(self, service_name: str) -> Optional[GpuvisorError]:
        return self._errors.get(service_name)

    # --- async interface ------------------------------------------------------------------

    async def check_health(self, service_name: str) -> bool:
        """True while gpuvisor's health checks pass (state ready or busy)."""
        state = await asyncio.to_thread(self.get_state, service_name)
        return state in (ServiceState.READY, ServiceState.BUSY)

    async def get_all_states(self) -> Dict[str, ServiceState]:
        services = await asyncio.to_thread(lambda: self.services)
        return {n: ServiceState.from_api(s["state"]) for n, s in services.items()}

    def _call(self, service_name, action, query, timeout_s):
        self._errors.pop(service_name, None)
        try:
            self.client.post(f"/api/v1/services/{quote(service_name)}/{action}", query=query,
                             timeout=timeout_s)
            return True
        except GpuvisorError as e:
            self._errors[service_name] = e
            if self.raise_errors:
                raise
            return False

    async def ensure_service(self, service_name: str, timeout: Optional[str] = None) -> bool:
        """Start the service if needed and wait until it is ready (POST .../ensure)."""
        return await asyncio.to_thread(self._call, service_name, "ensure",
                                       {"timeout": timeout or self.timeout}, None)

    async def stop_service(self, service_name: str, force: bool = False) -> bool:
        """Stop the service's whole process tree (POST .../stop; ``force``: SIGKILL at once)."""
        return await asyncio.to_thread(self._call, service_name, "stop",
                                       {"force": "true" if force else "false"}, None)

    async def restart_service(self, service_name: str, timeout: Optional[str] = None) -> bool:
        return await asyncio.to_thread(self._call, service_name, "restart",
                                       {"timeout": timeout or self.timeout}, None)

    async def ensure_phase(self, phase: int, timeout: Optional[str] = None) -> bool:
        """Every service of the phase at once (POST /api/v1/phases/{n}/ensure)."""
        return await asyncio.to_thread(self._phase, phase, timeout)

    def _phase(self, phase, timeout):
        key = f"phase {phase}"
        self._errors.pop(key, None)
        try:
            self.client.post(f"/api/v1/phases/{int(phase)}/ensure",
                             query={"timeout": timeout or self.timeout})
            return True
        except GpuvisorError as e:
            self._errors[key] = e
            if self.raise_errors:
                raise
            return False


_manager: Optional[LifecycleManager] = None


def get_lifecycle_manager() -> LifecycleManager:
    """Get or create the singleton LifecycleManager (seed 002's helper)."""
    global _manager
    if _manager is None:
        _manager = LifecycleManager()
    return _manager
