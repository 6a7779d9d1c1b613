// Node's own http client on a kept-alive connection through gpuvisor: a chunked, streamed
// response, then another request on the same socket. Node's parser is strict: a response that
// ends in "0\r\n\r\n" twice leaves the extra bytes on the socket and the next exchange fails.
//
//   GPUVISOR_BUILD=build node --test tests/clients/node_http_test.mjs
import assert from "node:assert/strict";
import http from "node:http";
import { after, before, describe, test } from "node:test";
import { Daemon, limit, sleep, upstreamService } from "./lib/daemon.mjs";

// One request on the agent; the body, the headers and the socket it went over.
function exchange(agent, url, { method = "GET", body } = {}) {
  return new Promise((ok, fail) => {
    const req = http.request(url, { agent, method,
                                    headers: body ? { "content-type": "application/json" } : {} },
                             (res) => {
      const parts = [];
      res.on("data", (d) => parts.push(d));
      res.on("end", () => ok({ status: res.statusCode, headers: res.headers,
                               body: Buffer.concat(parts).toString(), socket: req.socket }));
      res.on("error", fail);
    });
    req.on("error", fail);
    req.setTimeout(20_000, () => req.destroy(new Error("no answer in 20 s")));
    req.end(body);
  });
}

describe("node:http keep-alive after a chunked response", () => {
  let daemon;
  before(async () => {
    const chat = await upstreamService("chat", { models: ["llama3"] });
    daemon = await Daemon.start("node-http", { chat: chat.spec });
  });
  after(() => daemon?.stop());

  for (const [label, route, opts, check] of [
    ["/upstream/chat/stream", "/upstream/chat/stream?n=5", {},
     (body) => assert.equal(body, "line 0\nline 1\nline 2\nline 3\nline 4\n")],
    ["a /v1 SSE stream", "/v1/chat/completions", {
      method: "POST",
      body: JSON.stringify({ model: "llama3", stream: true, n_tokens: 4, messages: [] }),
    }, (body) => assert.ok(body.endsWith("data: [DONE]\n\n"), body)],
  ]) {
    test(`${label}, twice on one socket`, limit, async () => {
      const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
      try {
        const first = await exchange(agent, daemon.url + route, opts);
        assert.equal(first.status, 200);
        assert.equal(first.headers["transfer-encoding"], "chunked");
        check(first.body);
        // Let any stray bytes after the end of the first response reach the idle socket.
        await sleep(100);
        const second = await exchange(agent, daemon.url + route, opts);
        assert.equal(second.status, 200);
        check(second.body);
        assert.equal(second.socket, first.socket, "the second request reused the socket");
      } finally {
        agent.destroy();
      }
    });
  }
});
