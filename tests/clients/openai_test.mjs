// The official openai SDK (Node, v4: node-fetch on an http.Agent) through gpuvisor: /v1 routed
// by model, /upstream/NAME/v1, and a service's own proxy.listen port.
//
//   GPUVISOR_BUILD=build node --test tests/clients/openai_test.mjs
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import http from "node:http";
import { after, before, describe, test } from "node:test";
import OpenAI, { toFile } from "openai";
import { Daemon, limit, sleep, upstreamService, upstreamStats } from "./lib/daemon.mjs";

const expected = (n) => Array.from({ length: n }, (_, i) => `t${i} `).join("");

// An agent that counts the TCP connections it opened: one for many requests is keep-alive.
class CountingAgent extends http.Agent {
  created = 0;
  createConnection(...args) {
    this.created++;
    return super.createConnection(...args);
  }
}

// No retries (a retry would hide a failed exchange) and a bound on each request.
const sdk = (baseURL, options) =>
  new OpenAI({ baseURL, apiKey: "x", maxRetries: 0, timeout: 30_000, ...options });

async function streamed(client, params, options) {
  const stream = await client.chat.completions.create({ stream: true, ...params }, options);
  let content = "";
  let last;
  for await (const chunk of stream) {
    assert.equal(chunk.object, "chat.completion.chunk");
    content += chunk.choices[0].delta.content ?? "";
    last = chunk;
  }
  return { content, last };
}

describe("openai SDK through /v1", () => {
  let daemon, chat, asr, openai;
  before(async () => {
    chat = await upstreamService("chat", { models: ["llama3", "whisper-1"] });
    asr = await upstreamService("asr", { models: ["whisper-large-v3"] });
    daemon = await Daemon.start("openai", { chat: chat.spec, asr: asr.spec });
    openai = sdk(`${daemon.url}/v1`);
  });
  after(() => daemon?.stop());

  test("models.list is answered by the daemon with every configured model", limit, async () => {
    const ids = [];
    for await (const model of openai.models.list()) ids.push(model.id);
    assert.deepEqual(ids.sort(), ["llama3", "whisper-1", "whisper-large-v3"]);
    assert.equal(await daemon.state("chat"), "stopped", "listing models starts nothing");
  });

  test("a completion cold-starts its stopped service", limit, async () => {
    assert.equal(await daemon.state("chat"), "stopped");
    const completion = await openai.chat.completions.create({
      model: "llama3", messages: [{ role: "user", content: "hi" }], n_tokens: 4,
    });
    assert.equal(completion.served_by, "chat");
    assert.equal(completion.model, "llama3");
    assert.equal(completion.choices[0].message.content, expected(4));
    assert.match(await daemon.state("chat"), /^(ready|busy)$/);
  });

  test("streams, several on one kept-alive connection", limit, async () => {
    const agent = new CountingAgent({ keepAlive: true, maxSockets: 1 });
    const client = sdk(`${daemon.url}/v1`, { httpAgent: agent });
    try {
      for (let i = 0; i < 4; i++) {
        const { content, last } = await streamed(client, {
          model: "llama3", messages: [{ role: "user", content: `#${i}` }], n_tokens: 8,
          delay_ms: 5,
        });
        assert.equal(content, expected(8), `stream ${i}`);
        assert.equal(last.choices[0].finish_reason, "stop");
        assert.equal(last.served_by, "chat");
      }
      assert.equal(agent.created, 1, "all four streams on one connection");
    } finally {
      agent.destroy();
    }
  });

  test("a client that aborts mid-stream: the upstream sees it, the next request works", limit,
       async () => {
    await daemon.ensure("chat");  // to read its counters directly
    const start = await upstreamStats(chat);
    const stream = await openai.chat.completions.create({
      model: "llama3", stream: true, messages: [{ role: "user", content: "long" }],
      n_tokens: 200, delay_ms: 50,
    });
    // The SDK's iterator ends quietly or throws an AbortError, depending on when it lands.
    let got = 0;
    try {
      for await (const chunk of stream) {
        if (chunk.choices[0].delta.content && ++got === 3) stream.controller.abort();
      }
    } catch (e) {
      if (e.name !== "AbortError" && !/abort/i.test(String(e))) throw e;
    }
    assert.ok(got >= 3 && got < 200, `aborted after ${got} tokens`);
    // The proxy closes its upstream request, so the service stops generating (and its GPU
    // time is not spent on an answer nobody reads).
    const deadline = Date.now() + 5000;
    let now = start;
    while (now.aborted === start.aborted && Date.now() < deadline) {
      await sleep(50);
      now = await upstreamStats(chat);
    }
    assert.equal(now.aborted, start.aborted + 1, "the upstream saw the abort");
    assert.ok(daemon.alive, "the daemon survived");
    const completion = await openai.chat.completions.create({
      model: "llama3", messages: [{ role: "user", content: "again" }], n_tokens: 2,
    });
    assert.equal(completion.choices[0].message.content, expected(2));
    await daemon.waitState("chat", "ready", 10_000);
  });

  test("30 concurrent streams all complete, every token in order", limit, async () => {
    const results = await Promise.all(Array.from({ length: 30 }, (_, i) => streamed(openai, {
      model: "llama3", messages: [{ role: "user", content: `#${i}` }], n_tokens: 20,
      delay_ms: 10,
    })));
    for (const [i, r] of results.entries()) assert.equal(r.content, expected(20), `stream ${i}`);
  });

  // A small file, and one over the 1 MiB the daemon allows its own API's bodies.
  for (const size of [200 * 1024, 3 * 1024 * 1024 + 17]) {
    test(`audio.transcriptions of ${size} bytes: multipart routed by model`, limit,
         async () => {
      const audio = randomBytes(size);
      const sha256 = createHash("sha256").update(audio).digest("hex");
      for (const [model, service] of [["whisper-large-v3", "asr"], ["whisper-1", "chat"]]) {
        const result = await openai.audio.transcriptions.create({
          model, file: await toFile(audio, "speech.wav", { type: "audio/wav" }),
        });
        assert.equal(result.served_by, service, model);
        assert.equal(result.model, model);
        assert.equal(result.bytes, audio.length);
        assert.equal(result.sha256, sha256);
      }
    });
  }

  test("the same SDK through /upstream/chat/v1", limit, async () => {
    const client = sdk(`${daemon.url}/upstream/chat/v1`);
    const completion = await client.chat.completions.create({
      model: "anything", messages: [{ role: "user", content: "hi" }], n_tokens: 3,
    });
    assert.equal(completion.served_by, "chat");
    const { content } = await streamed(client, {
      model: "anything", messages: [{ role: "user", content: "hi" }], n_tokens: 6,
    });
    assert.equal(content, expected(6));
  });
});

// Its own daemon: a config with proxy.listen is refused by a daemon that does not know it yet,
// and the tests above should not depend on that.
describe("openai SDK through a proxy.listen port", () => {
  let daemon, chat;
  before(async () => {
    chat = await upstreamService("chat", { models: ["llama3"], listen: true, idleTtl: "30s" });
    daemon = await Daemon.start("openai-listen", { chat: chat.spec });
  });
  after(() => daemon?.stop());

  test("completions and streams at http://127.0.0.1:LPORT/v1", limit, async () => {
    const agent = new CountingAgent({ keepAlive: true, maxSockets: 1 });
    const client = sdk(`http://127.0.0.1:${chat.listenPort}/v1`, { httpAgent: agent });
    try {
      assert.equal(await daemon.state("chat"), "stopped");
      const completion = await client.chat.completions.create({
        model: "llama3", messages: [{ role: "user", content: "hi" }], n_tokens: 3,
      });
      assert.equal(completion.served_by, "chat");
      for (let i = 0; i < 3; i++) {
        const { content } = await streamed(client, {
          model: "llama3", messages: [{ role: "user", content: "hi" }], n_tokens: 6,
        });
        assert.equal(content, expected(6));
      }
      assert.equal(agent.created, 1, "one connection for all");
    } finally {
      agent.destroy();
    }
  });
});
