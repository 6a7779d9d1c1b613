"""An HTTP/1.0 server whose bodies have no Content-Length: they end where the connection does,
as old or minimal servers do. A proxy must frame them anew (chunked) or close its client too.

    /usr/bin/python3 close_delimited_server.py PORT

GET /health is "ok"; GET /big is body() below, written in a few pieces; any other path is its
own name back.
"""
import http.server
import os
import sys
import threading
import time


def body():
    """300 KiB anyone can recompute: 0..255 repeated."""
    return bytes(range(256)) * 1200


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"

    def do_GET(self):
        data = body() if self.path == "/big" else ("ok" if self.path == "/health" else self.path)
        data = data if isinstance(data, bytes) else data.encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.end_headers()  # and no Content-Length
        for start in range(0, len(data), 100 * 1024):
            self.wfile.write(data[start:start + 100 * 1024])
            self.wfile.flush()
            time.sleep(0.01)
        self.close_connection = True

    def log_message(self, *args):
        pass


def exit_with_parent():
    """A daemon that crashed cannot stop its services: leave with it rather than linger."""
    parent = os.getppid()
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(1)


if __name__ == "__main__":
    threading.Thread(target=exit_with_parent, daemon=True).start()
    http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
