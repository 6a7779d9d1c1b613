"""LifecycleManager (seed 002) against testsvc services."""
import asyncio
import time

import gpuvisor
from gpuvisor import ServiceState


def test_seed_002_flow(daemon):
    mgr = gpuvisor.LifecycleManager()

    async def main():
        states = await mgr.get_all_states()
        assert states == {"small": ServiceState.STOPPED, "big": ServiceState.STOPPED}
        assert await mgr.check_health("small") is False
        assert await mgr.ensure_service("small") is True
        assert mgr.get_state("small") == ServiceState.READY
        assert await mgr.check_health("small") is True
        assert (await mgr.get_all_states())["small"] == ServiceState.READY
        assert await mgr.stop_service("small") is True
        assert mgr.get_state("small") == ServiceState.STOPPED
        assert await mgr.ensure_service("small") is True
        assert await mgr.stop_service("small", force=True) is True

    asyncio.run(main())


def test_the_service_is_ours_in_the_gpu_views(daemon):
    mgr = gpuvisor.LifecycleManager()
    rm = gpuvisor.ResourceManager()
    assert asyncio.run(mgr.ensure_service("small"))
    try:
        pid = mgr.get_service("small")["pid"]
        # "small" has no health check: it is ready once started, which may be before it has
        # taken its (simulated) VRAM. Look until it has, or give up.
        deadline = time.monotonic() + 20
        row = None
        while row is None and time.monotonic() < deadline:
            row = next((r for r in rm.get_gpu_processes() if r["pid"] == pid), None)
            if row is None:
                time.sleep(0.02)
        assert row is not None, "the service never showed in /api/v1/processes"
        assert row["owner"] == "small" and row["external"] is False
    finally:
        assert asyncio.run(mgr.stop_service("small"))


def test_phases_unknown_services_and_errors(daemon):
    mgr = gpuvisor.LifecycleManager()
    assert mgr.get_services_for_phase(1) == ["small"]
    assert mgr.get_services_for_phase(2) == ["big"]
    assert mgr.get_services_for_phase(9) == []
    assert mgr.get_state("nope") == ServiceState.UNKNOWN
    assert asyncio.run(mgr.ensure_service("nope")) is False
    assert mgr.last_error("nope").status == 404
    strict = gpuvisor.LifecycleManager(raise_errors=True)
    import pytest
    with pytest.raises(gpuvisor.GpuvisorError) as e:
        asyncio.run(strict.ensure_service("nope"))
    assert e.value.code == "not_found" and "small" in e.value.message


def test_service_plugin(daemon):
    sp = gpuvisor.ServicePlugin("small")
    assert sp.get_execution_mode() == gpuvisor.PluginExecutionMode.SUBPROCESS
    assert sp.get_child_pids() == []
    sp.provision_remote_resource()
    pids = sp.get_child_pids()
    assert pids and pids[0] == gpuvisor.LifecycleManager().get_service("small")["pid"]
    res = sp.get_managed_resources()
    assert res["is_running"] and res["pid"] == pids[0]
    assert sp.get_remote_resource_info() is None and sp.estimate_cost(2.0) == 0.0
    sp.force_cleanup()
    assert gpuvisor.LifecycleManager().get_state("small") == gpuvisor.ServiceState.STOPPED
    assert sp.get_child_pids() == []


def test_every_state_the_daemon_reports_has_a_name():
    # Not UNKNOWN for a state gpuvisor added after the seed: a sleeping service is sleeping.
    for state in ("stopped", "starting", "ready", "busy", "stopping", "error", "unknown",
                  "sleeping"):
        assert ServiceState.from_api(state).value == state
