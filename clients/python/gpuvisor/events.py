"""Events: seed 001's EventBroadcasterProtocol over POST /api/v1/events, and the SSE stream."""
import asyncio
import json
import socket
import time
from dataclasses import dataclass, field
from typing import Any, Dict, Optional

from ._http import GpuvisorError, as_client


@dataclass
class Event:
    """One frame of an SSE stream. ``id`` is the event id (None for frames without one),
    ``type`` its ``event:`` name, ``data`` the decoded payload (for /api/v1/events frames:
    the event's own ``data``), ``time_ms`` when the daemon published it, ``raw`` the whole
    decoded ``data:`` line."""
    id: Optional[int]
    type: str
    data: Any
    time_ms: Optional[int] = None
    raw: Any = field(default=None, repr=False)


def parse_sse(lines):
    """Frames from an iterable of byte lines: (id, event, data) tuples."""
    ident, event, data = None, "message", []
    for raw in lines:
        line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
        if not line:
            if data or ident is not None:
                yield ident, event, "\n".join(data)
            ident, event, data = None, "message", []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "id":
            ident = value
        elif name == "event":
            event = value
        elif name == "data":
            data.append(value)


def to_event(ident, event, data):
    try:
        raw = json.loads(data) if data else None
    except ValueError:
        raw = data
    eid = int(ident) if ident and ident.isdigit() else None
    if isinstance(raw, dict) and "type" in raw and "data" in raw and raw.get("type") == event:
        return Event(eid, event, raw["data"], raw.get("time_ms"), raw)
    return Event(eid, event, raw, None, raw)


class EventStream:
    """Iterates over GET /api/v1/events. A dropped connection is opened again with
    ``Last-Event-ID`` set to the last id seen, so nothing the history still holds is missed.
    ``idle_timeout`` (seconds, None = wait forever) ends the iteration when no frame (not even
    the daemon's 15 s keepalive) arrives that long; ``reconnect=False`` ends it when the
    connection drops."""

    def __init__(self, client, types=None, last_event_id=None, idle_timeout=None,
                 reconnect=True, retry_delay=1.0):
        self.client, self.types = client, types
        self.last_event_id = last_event_id
        self.idle_timeout, self.reconnect, self.retry_delay = idle_timeout, reconnect, retry_delay
        self._resp = None
        self._frames = None
        self._closed = False

    def _connect(self):
        query = {"types": ",".join(self.types) if isinstance(self.types, (list, tuple, set))
                 else self.types}
        headers = {"Accept": "text/event-stream"}
        if self.last_event_id is not None:
            headers["Last-Event-ID"] = str(self.last_event_id)
        # The read timeout: longer than the daemon's 15 s keepalive unless asked otherwise.
        self._resp = self.client.open("GET", "/api/v1/events", query=query, headers=headers,
                                      timeout=self.idle_timeout or 60)
        self._frames = parse_sse(iter(self._resp.readline, b""))

    def __iter__(self):
        return self

    def __next__(self):
        while not self._closed:
            if self._frames is None:
                try:
                    self._connect()
                except GpuvisorError as e:
                    if e.status or not self.reconnect:
                        raise
                    time.sleep(self.retry_delay)
                    continue
            try:
                ident, event, data = next(self._frames)
            except (socket.timeout, TimeoutError):
                if self.idle_timeout is not None:
                    self.close()
                    raise StopIteration from None
                self._drop()  # no keepalive for 60 s: the connection is dead
                continue
            except (StopIteration, OSError, ValueError):
                self._drop()
                if not self.reconnect:
                    self.close()
                    raise StopIteration from None
                time.sleep(self.retry_delay)
                continue
            ev = to_event(ident, event, data)
            if ev.id is not None:
                self.last_event_id = ev.id
            return ev
        raise StopIteration

    def _drop(self):
        if self._resp is not None:
            try:
                self._resp.close()
            except OSError:
                pass
        self._resp, self._frames = None, None

    def close(self):
        self._closed = True
        self._drop()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __aiter__(self):
        return self

    async def __anext__(self):
        try:
            return await asyncio.to_thread(self.__next__)
        except StopIteration:
            raise StopAsyncIteration from None


class EventBroadcaster:
    """Seed 001's ``EventBroadcasterProtocol``: ``await broadcast(event_type, data)`` publishes
    onto gpuvisor's event stream, where every subscriber (other processes included) sees it."""

    def __init__(self, url=None, token=None, client=None):
        self.client = as_client(client, url, token)

    def publish(self, event_type: str, data: Dict[str, Any]) -> Dict[str, Any]:
        """Blocking form of broadcast; returns the event as it went out (``id``, ``type``,
        ``data``, ``unix_ms``)."""
        return self.client.post("/api/v1/events", {"type": event_type, "data": data})

    async def broadcast(self, event_type: str, data: Dict[str, Any]) -> None:
        """Broadcast an event to all connected clients."""
        await asyncio.to_thread(self.publish, event_type, data)

    def events(self, types=None, last_event_id=None, idle_timeout=None, reconnect=True):
        """An iterator (sync and async) over the event stream; see EventStream. Without
        ``last_event_id`` it starts with the daemon's retained history."""
        return EventStream(self.client, types, last_event_id, idle_timeout, reconnect)

    subscribe = events
