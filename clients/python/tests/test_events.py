"""EventBroadcaster: broadcast onto the daemon's stream, read it back, resume by id."""
import asyncio

import gpuvisor


def test_broadcast_then_the_stream_has_it(daemon):
    eb = gpuvisor.EventBroadcaster()
    assert asyncio.run(eb.broadcast("job:started", {"job_id": "job-123", "plugin": "test"})) \
        is None
    asyncio.run(eb.broadcast("job:completed", {"job_id": "job-123", "status": "success"}))
    with eb.events(types=["job:started", "job:completed"], idle_timeout=5) as stream:
        got = [next(stream), next(stream)]
    assert [(e.type, e.data) for e in got] == [
        ("job:started", {"job_id": "job-123", "plugin": "test"}),
        ("job:completed", {"job_id": "job-123", "status": "success"})]
    assert got[0].id < got[1].id and got[0].time_ms


def test_live_events_and_resume_with_last_event_id(daemon):
    eb = gpuvisor.EventBroadcaster()
    first = eb.publish("app.tick", {"n": 1})
    stream = eb.events(types="app.", last_event_id=first["id"], idle_timeout=5)
    second = eb.publish("app.tick", {"n": 2})
    ev = next(stream)
    assert (ev.id, ev.data) == (second["id"], {"n": 2})
    # Drop the connection: the next read reconnects with Last-Event-ID and misses nothing.
    stream._drop()
    eb.publish("app.tick", {"n": 3})
    ev = next(stream)
    assert ev.data == {"n": 3} and stream.last_event_id == ev.id
    stream.close()


def test_async_iteration(daemon):
    eb = gpuvisor.EventBroadcaster()

    async def main():
        await eb.broadcast("async.one", {"x": 1})
        async for ev in eb.events(types="async.", idle_timeout=5):
            return ev

    ev = asyncio.run(main())
    assert ev.type == "async.one" and ev.data == {"x": 1}


def test_a_bad_type_is_a_gpuvisor_error(daemon):
    import pytest
    with pytest.raises(gpuvisor.GpuvisorError) as e:
        gpuvisor.EventBroadcaster().publish("bad type with spaces", {})
    assert e.value.status == 400 and e.value.code == "bad_request"
