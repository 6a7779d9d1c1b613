"""ResourceManager against a real daemon: outside workers holding (fake) VRAM, and leases."""
import asyncio
import time

import pytest

import gpuvisor


def wait_for(pred, timeout=10.0, step=0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(step)
    return pred()


@pytest.fixture
def rm(daemon):
    return gpuvisor.ResourceManager()  # GPUVISOR_URL from the fixture


def test_a_registered_worker_is_no_longer_external(daemon, rm):
    p = daemon.hold_vram(3000)
    assert rm.is_external(p.pid) is True
    before = rm.check_gpu_availability(0)
    assert p.pid in before.external_pids

    rm.register_worker(p.pid, "transcription", plugin_id="asr_whisper", plugin_name="whisper",
                       config={"model_id": "whisper-large-v3"})
    # One snapshot later it is the app's everywhere.
    assert rm.is_external(p.pid) is False
    row = next(r for r in rm.get_gpu_processes() if r["pid"] == p.pid)
    assert row["owner"] == f"worker:outside-{p.pid}"
    after = rm.check_gpu_availability(0)
    assert p.pid in after.app_pids and p.pid not in after.external_pids
    assert after.status == gpuvisor.ResourceStatus.APP_BUSY

    w = rm.get_worker_by_pid(p.pid)
    assert isinstance(w, gpuvisor.WorkerState)
    assert (w.pid, w.worker_type, w.plugin_id, w.plugin_name, w.status) == \
        (p.pid, "transcription", "asr_whisper", "whisper", "idle")
    assert w.config == {"model_id": "whisper-large-v3"} and w.job_id is None
    assert "transcription" in rm.get_active_worker_types()
    assert rm.get_all_related_pids(p.pid)[0] == p.pid
    assert p.pid in rm.get_all_app_pids_including_children()
    rm.unregister_worker(p.pid)
    assert rm.get_worker_by_pid(p.pid) is None
    assert rm.is_external(p.pid) is True
    p.kill()
    p.wait()


def test_seed_003_example_flow(daemon, rm):
    """Seed 003's 'Basic Usage', with a real process in place of PID 12345."""
    p = daemon.hold_vram(500)
    rm.register_worker(pid=p.pid, worker_type="transcription", plugin_name="whisper",
                       config={"model_id": "whisper-large-v3"})
    worker = rm.get_worker_by_pid(p.pid)
    assert (worker.worker_type, worker.plugin_name, worker.status) == \
        ("transcription", "whisper", "idle")
    rm.update_worker_state(p.pid, status="running", job_id="job-123")
    worker = rm.get_worker_by_pid(p.pid)
    assert (worker.status, worker.job_id) == ("running", "job-123")
    assert rm.get_worker_by_job("job-123").pid == p.pid
    assert rm.get_worker_by_job("job-nope") is None
    assert rm.get_active_worker_types() >= {"transcription"}
    rm.unregister_worker(p.pid)
    assert all(w.pid != p.pid for w in rm.get_all_workers())
    p.kill()
    p.wait()


def test_update_worker_state_none_keeps_clear_clears(daemon, rm):
    p = daemon.hold_vram(100)
    rm.register_worker(p.pid, "llm")
    rm.update_worker_state(p.pid, status="running", job_id="j1", plugin_name="vllm",
                           plugin_id="llm_vllm", loaded_plugin_resource="qwen",
                           config={"t": 1})
    rm.update_worker_state(p.pid, loaded_plugin_resource="qwen-32b")  # the rest: unchanged
    w = rm.get_worker_by_pid(p.pid)
    assert (w.status, w.job_id, w.plugin_name, w.plugin_id, w.loaded_plugin_resource,
            w.config) == ("running", "j1", "vllm", "llm_vllm", "qwen-32b", {"t": 1})
    rm.update_worker_state(p.pid, plugin_name=gpuvisor.CLEAR, config=gpuvisor.CLEAR)
    w = rm.get_worker_by_pid(p.pid)
    assert (w.plugin_name, w.config, w.job_id) == (None, None, "j1")
    # Seed 001's example: status idle with job_id=None means no job runs any more.
    rm.update_worker_state(pid=p.pid, status="idle", job_id=None, loaded_plugin_resource=None)
    w = rm.get_worker_by_pid(p.pid)
    assert (w.status, w.job_id, w.loaded_plugin_resource) == ("idle", None, "qwen-32b")
    rm.update_worker_state(999999999, status="running")  # unknown: ignored, as in the seed
    rm.unregister_worker(p.pid)
    p.kill()
    p.wait()


def test_a_dead_worker_disappears_by_itself(daemon, rm):
    p = daemon.hold_vram(1000)
    rm.register_worker(p.pid, "tts")
    stream = gpuvisor.EventBroadcaster().events(types=["worker.unregistered"],
                                                idle_timeout=10)
    p.kill()
    p.wait()
    assert wait_for(lambda: rm.get_worker_by_pid(p.pid) is None)
    ev = next(e for e in stream if e.data.get("pid") == p.pid)
    stream.close()
    assert ev.data["reason"] == "exited"


def test_bad_registrations_raise_gpuvisor_error(daemon, rm):
    with pytest.raises(gpuvisor.GpuvisorError) as e:
        rm.register_worker(999999999, "x")
    assert e.value.status == 404 and e.value.code == "not_found"
    p = daemon.hold_vram(100)
    rm.register_worker(p.pid, "x")
    with pytest.raises(gpuvisor.GpuvisorError) as e:
        rm.register_worker(p.pid, "x")
    assert e.value.status == 409 and str(p.pid) in e.value.message
    rm.unregister_worker(p.pid)
    rm.unregister_worker(p.pid)  # twice: not an error
    p.kill()
    p.wait()


def test_reserve_vram_blocks_an_ensure_and_the_refusal_names_it(daemon, rm):
    lm = gpuvisor.LifecycleManager()
    with rm.reserve_vram(20000, holder="notebook", ttl="5m") as lease:
        assert isinstance(lease, gpuvisor.Lease) and lease.vram_mb == 20000
        assert lease.gpu == 0 and lease.holder == "notebook"
        assert any(l.id == lease.id for l in rm.get_leases())
        ok = asyncio.run(lm.ensure_service("big"))
        assert ok is False
        err = lm.last_error("big")
        assert err.status == 409 and err.code == "conflict"
        assert f"lease {lease.id} (notebook)" in err.message
        with pytest.raises(gpuvisor.GpuvisorError) as e:
            rm.acquire_lease(8000)
        assert e.value.status == 409 and f"lease {lease.id}" in e.value.message
    assert all(l.id != lease.id for l in rm.get_leases())
    assert asyncio.run(lm.ensure_service("big")) is True
    assert asyncio.run(lm.stop_service("big")) is True


def test_an_outside_worker_is_named_in_a_refusal(daemon, rm):
    p = daemon.hold_vram(12000)
    rm.register_worker(p.pid, "transcription")
    lm = gpuvisor.LifecycleManager()
    assert asyncio.run(lm.ensure_service("big")) is False
    assert f"outside worker {p.pid}" in lm.last_error("big").message
    rm.unregister_worker(p.pid)
    p.kill()
    p.wait()
