"""gpuvisor: a standard-library client for the gpuvisor daemon, with the classes of the
cjm-fasthtml libraries and the MCN lifecycle manager as drop-in replacements.

    from gpuvisor import ResourceManager, EventBroadcaster, LifecycleManager, PluginRegistry

The daemon's URL is $GPUVISOR_URL (default http://127.0.0.1:7733), its token $GPUVISOR_TOKEN.
See docs/python.md."""
from ._http import Client, GpuvisorError, DEFAULT_URL
from .events import Event, EventBroadcaster, EventStream
from .jobs import JobClient
from .lifecycle import LifecycleManager, ServiceState, get_lifecycle_manager
from .plugins import (PluginExecutionMode, PluginMetadata, PluginRegistry, RemoteResourceInfo,
                      ServicePlugin)
from .resources import (CLEAR, Lease, ResourceConflict, ResourceManager, ResourceStatus,
                        ResourceType, WorkerState)

__all__ = ["Client", "GpuvisorError", "DEFAULT_URL", "Event", "EventBroadcaster", "EventStream",
           "JobClient", "LifecycleManager", "ServiceState", "get_lifecycle_manager",
           "PluginExecutionMode", "PluginMetadata", "PluginRegistry", "RemoteResourceInfo",
           "ServicePlugin", "CLEAR", "Lease", "ResourceConflict", "ResourceManager",
           "ResourceStatus", "ResourceType", "WorkerState"]
