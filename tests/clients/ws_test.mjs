// WebSockets through gpuvisor with the npm `ws` client: /upstream/NAME/ws, /v1/realtime?model=
// and a proxy.listen port; echo of text and a 1 MiB binary message, a close from either side,
// and what an open socket means for the service (busy, never idled out, closed by a stop).
//
//   GPUVISOR_BUILD=build node --test tests/clients/ws_test.mjs
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { once } from "node:events";
import { after, before, describe, test } from "node:test";
import WebSocket from "ws";
import { Daemon, limit, sleep, upstreamService, upstreamStats } from "./lib/daemon.mjs";

async function open(url) {
  const ws = new WebSocket(url, { maxPayload: 64 << 20, handshakeTimeout: 20_000 });
  const messages = [];
  ws.on("message", (data, isBinary) => messages.push({ data, isBinary }));
  ws.closed = once(ws, "close").then(([code, reason]) => ({ code, reason: reason.toString() }));
  await new Promise((ok, fail) => {
    ws.once("open", ok);
    ws.once("error", fail);
    ws.once("unexpected-response", (req, res) => fail(new Error(`HTTP ${res.statusCode}`)));
  });
  // The next message not yet taken by a next() before: they come in the order sent.
  ws.next = async (timeoutMs = 10_000) => {
    const want = (ws.taken = (ws.taken ?? 0) + 1);
    const deadline = Date.now() + timeoutMs;
    while (messages.length < want) {
      if (Date.now() > deadline || ws.readyState === WebSocket.CLOSED) {
        throw new Error(`no message ${want}`);
      }
      await sleep(5);
    }
    return messages[want - 1];
  };
  return ws;
}

// Text and a 1 MiB binary message come back as they went.
async function echoes(ws) {
  ws.send("hello, upstream");
  const text = await ws.next();
  assert.equal(text.isBinary, false);
  assert.equal(text.data.toString(), "hello, upstream");
  const blob = randomBytes(1 << 20);
  ws.send(blob);
  const back = await ws.next();
  assert.equal(back.isBinary, true);
  assert.ok(Buffer.compare(back.data, blob) === 0, "1 MiB binary message intact");
}

describe("ws through /upstream and /v1/realtime", () => {
  let daemon, rt;
  before(async () => {
    rt = await upstreamService("rt", { models: ["gpt-4o-realtime"], idleTtl: "1s" });
    daemon = await Daemon.start("ws", { rt: rt.spec });
  });
  after(() => daemon?.stop());
  const wsUrl = (route) => daemon.url.replace(/^http/, "ws") + route;

  test("/upstream/rt/ws: echo, then the client closes", limit, async () => {
    const ws = await open(wsUrl("/upstream/rt/ws"));
    await echoes(ws);
    ws.close(1000, "bye");
    assert.deepEqual(await ws.closed, { code: 1000, reason: "bye" });
    const deadline = Date.now() + 5000;
    while ((await upstreamStats(rt)).ws_open > 0 && Date.now() < deadline) await sleep(20);
    assert.equal((await upstreamStats(rt)).ws_open, 0, "the upstream saw the close");
  });

  test("/upstream/rt/ws: the server closes", limit, async () => {
    const ws = await open(wsUrl("/upstream/rt/ws"));
    ws.send("close-me");
    assert.deepEqual(await ws.closed, { code: 4000, reason: "asked to" });
  });

  test("/v1/realtime?model=M: routed by the query's model, query passed on", limit, async () => {
    const ws = await open(wsUrl("/v1/realtime?model=gpt-4o-realtime"));
    await echoes(ws);
    ws.close();
    await ws.closed;
    const stats = await upstreamStats(rt);
    assert.ok(stats.ws_urls.includes("/v1/realtime?model=gpt-4o-realtime"), stats.ws_urls);
  });

  test("an open socket keeps the service busy; idle_ttl counts from its close", limit, async () => {
    const ws = await open(wsUrl("/upstream/rt/ws"));
    const states = await daemon.watchStates();
    try {
      await daemon.waitState("rt", "busy", 5000);
      const metric = async (name) => {
        const text = await (await fetch(`${daemon.url}/metrics`)).text();
        const line = text.split("\n").find((l) => l.startsWith(`${name}{service="rt"} `));
        return Number(line?.split(" ")[1]);
      };
      assert.equal(await metric("gpuvisor_proxy_open_tunnels"), 1);
      assert.ok((await metric("gpuvisor_proxy_upgrades_total")) >= 1);
      // Three times idle_ttl (1s) plus the proxy's linger, quiet: still busy, no stop.
      await sleep(3500);
      assert.equal(await daemon.state("rt"), "busy");
      ws.send("still here");
      assert.equal((await ws.next()).data.toString(), "still here");
      const closedAt = Date.now();
      ws.close();
      await ws.closed;
      await daemon.waitState("rt", "stopped", 15_000);
      assert.equal(await metric("gpuvisor_proxy_open_tunnels"), 0);
      const stops = states.seen.filter((e) => e.service === "rt" && e.to === "stopping");
      assert.equal(stops.length, 1, JSON.stringify(states.seen));
      assert.ok(stops[0].at >= closedAt, "stopped only after the socket closed");
    } finally {
      states.close();
      ws.terminate();
    }
  });

  test("stopping the service closes an open socket", limit, async () => {
    const ws = await open(wsUrl("/upstream/rt/ws"));
    ws.send("ping");
    await ws.next();
    await daemon.api("POST", "/api/v1/services/rt/stop");
    const timeout = sleep(10_000).then(() => "still open");
    const closed = await Promise.race([ws.closed, timeout]);
    assert.notEqual(closed, "still open");
    assert.equal(await daemon.waitState("rt", "stopped"), "stopped");
  });
});

describe("ws through a proxy.listen port", () => {
  let daemon, rt;
  before(async () => {
    rt = await upstreamService("rt", { listen: true, idleTtl: "1s" });
    daemon = await Daemon.start("ws-listen", { rt: rt.spec });
  });
  after(() => daemon?.stop());

  test("ws://127.0.0.1:LPORT/ws: the first connection starts the service; echo; close", limit,
       async () => {
    assert.equal(await daemon.state("rt"), "stopped");
    const ws = await open(`ws://127.0.0.1:${rt.listenPort}/ws`);
    await echoes(ws);
    assert.equal(await daemon.state("rt"), "busy");
    ws.send("close-me");
    assert.deepEqual(await ws.closed, { code: 4000, reason: "asked to" });
    await daemon.waitState("rt", "stopped", 15_000);  // idle_ttl after the close
  });
});
