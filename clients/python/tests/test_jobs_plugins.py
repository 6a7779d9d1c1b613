"""JobClient and PluginRegistry against a worker plugin run by tools/testworker."""
import pytest

import gpuvisor


def test_submit_stream_chunks_and_progress(daemon):
    jobs = gpuvisor.JobClient()
    job = jobs.submit("test_echo", {"text": "hi"})
    assert job["state"] in ("pending", "running") and job["plugin"] == "test_echo"
    events = list(jobs.stream(job["id"], timeout=30))
    assert events[0].type == "job" and events[-1].type == "job"
    chunks = [e.data["data"] for e in events if e.type == "job.chunk"]
    progress = [e.data["progress"] for e in events if e.type == "job.progress"]
    assert chunks == ["chunk 1", "chunk 2"]
    assert 0.5 in progress
    final = events[-1].data
    assert final["state"] == "completed", final
    assert jobs.get(job["id"])["state"] == "completed"
    assert jobs.result(job["id"]) == final["result"]
    assert any(j["id"] == job["id"] for j in jobs.list(plugin="test_echo"))
    with pytest.raises(gpuvisor.GpuvisorError) as e:
        jobs.cancel(job["id"])
    assert e.value.status == 409


def test_unknown_plugin_and_job(daemon):
    jobs = gpuvisor.JobClient()
    with pytest.raises(gpuvisor.GpuvisorError) as e:
        jobs.submit("nope_nope", {})
    assert e.value.status == 404
    with pytest.raises(gpuvisor.GpuvisorError) as e:
        jobs.get(999999)
    assert e.value.status == 404


def test_plugin_registry(daemon):
    reg = gpuvisor.PluginRegistry()
    assert reg.get_categories() == ["test"]
    assert reg.get_category_display_name("test") == "Tests"
    plugins = reg.get_all_plugins()
    assert [p.get_unique_id() for p in plugins] == ["test_echo"]
    meta = reg.get_plugin("test_echo")
    assert isinstance(meta, gpuvisor.PluginMetadata)
    assert (meta.name, meta.category, meta.title) == ("echo", "test", "echo")
    assert meta.execution_mode == gpuvisor.PluginExecutionMode.SUBPROCESS
    assert meta.is_local_execution() and not meta.is_configured
    assert reg.get_plugin("nope_nope") is None
    assert [p.name for p in reg.get_plugins_by_category("test")] == ["echo"]
    assert reg.get_plugins_by_category("other") == []
    assert reg.load_plugin_config("test_echo") == {"speed": 1.0}
    assert reg.save_plugin_config("test_echo", {"speed": 1.5}) is True
    assert reg.load_plugin_config("test_echo") == {"speed": 1.5}
    assert reg.get_plugin("test_echo").is_configured
    with pytest.raises(gpuvisor.GpuvisorError) as e:
        reg.save_plugin_config("test_echo", {"speed": 7})
    assert e.value.status == 400 and [v["path"] for v in e.value.violations] == ["/speed"]
    assert reg.delete_plugin_config("test_echo") is True
    assert reg.delete_plugin_config("test_echo") is False
    assert reg.load_plugin_config("nope_nope") == {}
