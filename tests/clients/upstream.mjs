// A stand-in GPU service for the client tests: one Node http server that speaks the parts of
// an OpenAI-compatible server, a ComfyUI-like web UI, SSE, WebSocket echo and uploads that the
// proxy has to carry. gpuvisor starts it as a service's command.
//
//   node upstream.mjs --port PORT --name NAME
//
// Routes:
//   GET  /health                    200 once listening (the service's health check)
//   POST /v1/chat/completions       JSON, or SSE chat.completion.chunk's with "stream": true;
//                                   extra body fields n_tokens (5) and delay_ms (10) shape the
//                                   stream: tokens "t0 ", "t1 ", ... one res.write each
//   POST /v1/audio/transcriptions   multipart: {text, served_by, model, bytes, sha256} of "file"
//   GET  /events?n=3                SSE: n events {"i": k}, then the end of the response
//   GET  /stream?n=5&delay_ms=10    chunked text/plain, one write per line "line k\n"
//   GET  /trailers                  chunked body with an X-Checksum trailer (sha256 of the body)
//   POST /upload                    streams the body: {bytes, sha256, transfer_encoding, expect}
//   GET  /ui/, /static/app.js       a page that only works at the root of a port (absolute paths)
//   GET  /stats                     what this process saw: connections, aborts, WebSockets
//   WebSocket on /ws and /v1/realtime: echo, text and binary; "close-me" makes the server close
import { createHash } from "node:crypto";
import http from "node:http";
import { parseArgs } from "node:util";
import { WebSocketServer } from "ws";

const { values: args } = parseArgs({
  options: { port: { type: "string" }, name: { type: "string", default: "upstream" } },
});
const name = args.name;

// Counters the tests read through /stats (straight, or through the proxy) to see what reached
// this side: that a client's abort arrived, that uploads streamed, how many sockets were used.
const stats = {
  name,
  pid: process.pid,
  connections: 0,      // TCP connections accepted
  requests: 0,         // HTTP requests, /health and /stats excepted
  aborted: 0,          // responses whose client went away before they ended
  aborted_paths: [],
  streams_completed: 0,
  ws_opened: 0,
  ws_open: 0,
  ws_urls: [],         // the request targets of the WebSocket upgrades
  ws_close_codes: [],  // as this side saw them
};

const sleep = (ms) => new Promise((done) => setTimeout(done, ms));
const sendJson = (res, status, body) => {
  const text = JSON.stringify(body);
  res.writeHead(status, { "content-type": "application/json",
                          "content-length": Buffer.byteLength(text) });
  res.end(text);
};
const readAll = async (req) => {
  const parts = [];
  for await (const part of req) parts.push(part);
  return Buffer.concat(parts);
};

// Writes the parts one at a time with a pause between them, stopping if the client goes.
async function trickle(res, parts, delayMs) {
  for (const part of parts) {
    if (res.destroyed || res.writableEnded) return false;
    res.write(part);
    if (delayMs > 0) await sleep(delayMs);
  }
  return !res.destroyed;
}

function tokens(n) {
  return Array.from({ length: n }, (_, i) => `t${i} `);
}

async function chat(req, res) {
  const body = JSON.parse((await readAll(req)).toString() || "{}");
  const n = body.n_tokens ?? 5;
  const id = `chatcmpl-${name}-${stats.requests}`;
  const created = Math.floor(Date.now() / 1000);
  if (!body.stream) {
    sendJson(res, 200, {
      id, object: "chat.completion", created, model: body.model, served_by: name,
      choices: [{ index: 0, finish_reason: "stop",
                  message: { role: "assistant", content: tokens(n).join("") } }],
      usage: { prompt_tokens: 1, completion_tokens: n, total_tokens: n + 1 },
    });
    return;
  }
  // No Content-Length: Node sends it chunked, one chunk per write, as llama.cpp and vLLM do.
  res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache" });
  const chunk = (delta, finish) => `data: ${JSON.stringify({
    id, object: "chat.completion.chunk", created, model: body.model, served_by: name,
    choices: [{ index: 0, delta, finish_reason: finish }],
  })}\n\n`;
  const events = [chunk({ role: "assistant", content: "" }, null),
                  ...tokens(n).map((t) => chunk({ content: t }, null)),
                  chunk({}, "stop"), "data: [DONE]\n\n"];
  if (await trickle(res, events, body.delay_ms ?? 10)) {
    stats.streams_completed++;
    res.end();
  }
}

// Just enough multipart/form-data for the SDK's uploads: the parts' names, filenames, bytes.
function multipart(body, type) {
  const boundary = /boundary=(?:"([^"]+)"|([^;]+))/.exec(type);
  if (!boundary) return {};
  const delimiter = Buffer.from(`--${boundary[1] ?? boundary[2]}`);
  const fields = {};
  let at = body.indexOf(delimiter);
  while (at >= 0) {
    const start = at + delimiter.length + 2;  // past the CRLF after the delimiter
    const next = body.indexOf(delimiter, start);
    if (next < 0) break;
    const part = body.subarray(start, next - 2);  // less the CRLF before the next delimiter
    const headEnd = part.indexOf("\r\n\r\n");
    const head = part.subarray(0, headEnd).toString();
    const fieldName = /name="([^"]*)"/.exec(head)?.[1];
    if (fieldName) fields[fieldName] = part.subarray(headEnd + 4);
    at = next;
  }
  return fields;
}

async function transcribe(req, res) {
  const fields = multipart(await readAll(req), req.headers["content-type"] ?? "");
  const file = fields.file ?? Buffer.alloc(0);
  sendJson(res, 200, {
    text: `transcribed by ${name}`, served_by: name, model: fields.model?.toString(),
    bytes: file.length, sha256: createHash("sha256").update(file).digest("hex"),
  });
}

async function upload(req, res) {
  const hash = createHash("sha256");
  let bytes = 0;
  for await (const part of req) {  // streamed: 200 MB never sit in memory here
    hash.update(part);
    bytes += part.length;
  }
  sendJson(res, 200, { served_by: name, bytes, sha256: hash.digest("hex"),
                       transfer_encoding: req.headers["transfer-encoding"] ?? null,
                       content_length: req.headers["content-length"] ?? null,
                       expect: req.headers.expect ?? null });
}

async function events(req, res, query) {
  const n = Number(query.get("n") ?? 3);
  res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache" });
  // retry: a browser's EventSource waits this long before it reconnects after the end.
  const frames = ["retry: 60000\n\n",
                  ...Array.from({ length: n }, (_, i) => `data: ${JSON.stringify({ i })}\n\n`)];
  if (await trickle(res, frames, 20)) res.end();
}

async function stream(req, res, query) {
  const n = Number(query.get("n") ?? 5);
  res.writeHead(200, { "content-type": "text/plain" });
  const lines = Array.from({ length: n }, (_, i) => `line ${i}\n`);
  if (await trickle(res, lines, Number(query.get("delay_ms") ?? 10))) {
    stats.streams_completed++;
    res.end();
  }
}

async function trailers(req, res) {
  res.writeHead(200, { "content-type": "text/plain", trailer: "X-Checksum" });
  const lines = Array.from({ length: 4 }, (_, i) => `part ${i}\n`);
  await trickle(res, lines, 5);
  res.addTrailers({ "X-Checksum": createHash("sha256").update(lines.join("")).digest("hex") });
  res.end();
}

// The UI: absolute paths everywhere, as ComfyUI and most web UIs have, so it works only when
// served at the root of a port (gpuvisor's proxy.listen), never under a path prefix.
const page = `<!doctype html>
<html><head><meta charset="utf-8"><title>${name} ui</title></head>
<body>
<h1>${name}</h1>
<ul>
  <li id="fetch">fetch: waiting</li>
  <li id="events">events: waiting</li>
  <li id="ws">ws: waiting</li>
</ul>
<script src="/static/app.js"></script>
</body></html>
`;

// runAll(prefix) does the UI's three kinds of traffic against prefix + the absolute paths:
// "" on its own port, or "/upstream/NAME" when a test runs it from the daemon's origin.
// Each result lands in window.results and, on the UI page, in an element's data-done.
const app = `
async function streamChat(prefix) {
  const r = await fetch(prefix + "/v1/chat/completions", {
    method: "POST", headers: { "content-type": "application/json" },
    body: JSON.stringify({ model: "llama3", stream: true, n_tokens: 6, delay_ms: 20,
                           messages: [{ role: "user", content: "hi" }] }),
  });
  if (!r.ok) throw new Error("chat: HTTP " + r.status);
  const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
  let text = "", content = "", reads = 0;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    reads++;
    text += value;
  }
  for (const line of text.split("\\n")) {
    if (!line.startsWith("data: ") || line === "data: [DONE]") continue;
    content += JSON.parse(line.slice(6)).choices[0].delta.content ?? "";
  }
  if (!text.trimEnd().endsWith("data: [DONE]")) throw new Error("chat: no [DONE]");
  return { content, reads };
}

function listen(prefix) {
  return new Promise((ok, fail) => {
    const source = new EventSource(prefix + "/events?n=3");
    const seen = [];
    source.onmessage = (e) => {
      seen.push(JSON.parse(e.data).i);
      if (seen.length === 3) { source.close(); ok(seen.join(",")); }
    };
    source.onerror = () => { source.close(); fail(new Error("events: error after " + seen)); };
  });
}

function echo(prefix) {
  return new Promise((ok, fail) => {
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    const ws = new WebSocket(scheme + location.host + prefix + "/ws");
    ws.binaryType = "arraybuffer";
    const got = [];
    ws.onopen = () => { ws.send("hello"); ws.send(new Uint8Array([1, 2, 3]).buffer); };
    ws.onmessage = (e) => {
      got.push(typeof e.data === "string" ? e.data : "bytes:" + new Uint8Array(e.data).join("."));
      if (got.length === 2) ws.close(1000, "done");
    };
    ws.onclose = (e) =>
      got.length === 2 ? ok(got.join(",")) : fail(new Error("ws closed " + e.code));
    ws.onerror = () => fail(new Error("ws: error"));
  });
}

async function runAll(prefix) {
  const results = {};
  const show = (id, value) => {
    results[id] = value;
    const el = document.getElementById(id);
    if (el) { el.dataset.done = value; el.textContent = id + ": " + value; }
  };
  const fail = (id) => (e) => show(id, "error: " + e.message);
  await Promise.all([
    streamChat(prefix).then((r) => show("fetch", r.content.trim()), fail("fetch")),
    listen(prefix).then((r) => show("events", r), fail("events")),
    echo(prefix).then((r) => show("ws", r), fail("ws")),
  ]);
  window.results = results;
  return results;
}

if (document.getElementById("fetch")) runAll("");
`;

const server = http.createServer(async (req, res) => {
  const url = new URL(req.url, "http://upstream");
  const route = `${req.method} ${url.pathname}`;
  if (url.pathname !== "/health" && url.pathname !== "/stats") stats.requests++;
  res.on("close", () => {
    if (!res.writableFinished) {
      stats.aborted++;
      stats.aborted_paths.push(url.pathname);
    }
  });
  try {
    switch (route) {
      case "GET /health": return sendJson(res, 200, { status: "ok", name });
      case "GET /stats": return sendJson(res, 200, stats);
      case "POST /v1/chat/completions": return await chat(req, res);
      case "POST /v1/audio/transcriptions": return await transcribe(req, res);
      case "POST /upload": return await upload(req, res);
      case "GET /events": return await events(req, res, url.searchParams);
      case "GET /stream": return await stream(req, res, url.searchParams);
      case "GET /trailers": return await trailers(req, res);
      case "GET /ui/":
        res.writeHead(200, { "content-type": "text/html; charset=utf-8" });
        return res.end(page);
      case "GET /static/app.js":
        res.writeHead(200, { "content-type": "text/javascript" });
        return res.end(app);
      default: return sendJson(res, 404, { error: `no route ${route}` });
    }
  } catch (e) {
    if (!res.headersSent) sendJson(res, 500, { error: String(e) });
    else res.destroy();
  }
});
server.on("connection", () => stats.connections++);

// WebSockets: echo, on the paths a UI (/ws) and the OpenAI Realtime API (/v1/realtime) use.
const wss = new WebSocketServer({ noServer: true, maxPayload: 64 << 20 });
server.on("upgrade", (req, socket, head) => {
  const path = new URL(req.url, "http://upstream").pathname;
  if (path !== "/ws" && path !== "/v1/realtime") {
    socket.end("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    return;
  }
  wss.handleUpgrade(req, socket, head, (ws) => {
    stats.ws_opened++;
    stats.ws_open++;
    stats.ws_urls.push(req.url);
    ws.on("message", (data, isBinary) => {
      if (!isBinary && data.toString() === "close-me") ws.close(4000, "asked to");
      else ws.send(data, { binary: isBinary });
    });
    ws.on("close", (code) => {
      stats.ws_open--;
      stats.ws_close_codes.push(code);
    });
  });
});

server.listen(Number(args.port), "127.0.0.1");
// A daemon that crashed cannot stop its services: leave with it rather than linger.
const parent = process.ppid;
setInterval(() => process.ppid !== parent && process.exit(1), 500).unref();
// gpuvisor stops a service with SIGTERM: close at once, open sockets included.
process.on("SIGTERM", () => {
  for (const ws of wss.clients) ws.terminate();
  server.closeAllConnections();
  server.close(() => process.exit(0));
  setTimeout(() => process.exit(0), 500).unref();
});
