"""The HTTP layer: one small urllib client shared by every class of the package."""
import json
import os
import urllib.error
import urllib.parse
import urllib.request

DEFAULT_URL = "http://127.0.0.1:7733"


class GpuvisorError(Exception):
    """An error answer from the daemon, or no answer at all.

    ``status`` is the HTTP status (0 when the daemon could not be reached), ``code`` the API's
    error code (``not_found``, ``conflict``, ...; ``unreachable`` without an answer), ``message``
    its message, and ``body`` the whole ``{"error": {...}}`` object (``log_tail``,
    ``violations``, ...)."""

    def __init__(self, status, code, message, body=None):
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message = status, code, message
        self.body = body or {}

    @property
    def violations(self):
        """For a plugin config the schema rejected: ``[{"path", "message"}, ...]``."""
        return self.body.get("violations", [])


class Client:
    """Talks to one gpuvisor daemon: ``url`` (default ``$GPUVISOR_URL``, else
    http://127.0.0.1:7733) with ``token`` (default ``$GPUVISOR_TOKEN``) as a bearer token."""

    def __init__(self, url=None, token=None, timeout=330.0):
        self.url = (url or os.environ.get("GPUVISOR_URL") or DEFAULT_URL).rstrip("/")
        self.token = token if token is not None else os.environ.get("GPUVISOR_TOKEN") or None
        self.timeout = timeout

    def headers(self, extra=None):
        h = {"Accept": "application/json"}
        if self.token:
            h["Authorization"] = f"Bearer {self.token}"
        h.update(extra or {})
        return h

    def open(self, method, path, body=None, query=None, headers=None, timeout=None):
        """The raw response (for streams). Error answers raise GpuvisorError."""
        url = self.url + path
        if query:
            url += "?" + urllib.parse.urlencode({k: v for k, v in query.items() if v is not None})
        data = None
        extra = dict(headers or {})
        if body is not None:
            data = json.dumps(body).encode()
            extra["Content-Type"] = "application/json"
        req = urllib.request.Request(url, data=data, method=method, headers=self.headers(extra))
        try:
            return urllib.request.urlopen(req, timeout=timeout or self.timeout)
        except urllib.error.HTTPError as e:
            raise error_from(e.code, e.read()) from None
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise GpuvisorError(0, "unreachable", f"{method} {url}: {reason}") from None

    def request(self, method, path, body=None, query=None, timeout=None):
        """One JSON request; the decoded JSON answer."""
        with self.open(method, path, body, query, timeout=timeout) as resp:
            text = resp.read()
        return json.loads(text) if text.strip() else None

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, body=None, **kw):
        return self.request("POST", path, body=body, **kw)


def error_from(status, raw):
    try:
        body = json.loads(raw)["error"]
        return GpuvisorError(status, body.get("code", "error"), body.get("message", ""), body)
    except (ValueError, KeyError, TypeError):
        text = raw.decode(errors="replace").strip() if isinstance(raw, bytes) else str(raw)
        return GpuvisorError(status, "error", text)


def as_client(client, url, token):
    return client if client is not None else Client(url, token)


def quote(segment):
    return urllib.parse.quote(str(segment), safe="")
