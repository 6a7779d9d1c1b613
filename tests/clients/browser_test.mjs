// Headless Chromium (Debian's, driven by playwright-core) doing what a web UI does through
// gpuvisor: a streamed fetch read with a ReadableStream reader, an EventSource and a WebSocket.
// On a proxy.listen port the UI's own page runs them with its absolute paths; on the daemon's
// origin a page runs the same code against /upstream/NAME/....
//
//   GPUVISOR_BUILD=build node --test tests/clients/browser_test.mjs
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { chromium } from "playwright-core";
import { Daemon, limit, upstreamService } from "./lib/daemon.mjs";

const want = { fetch: "t0 t1 t2 t3 t4 t5", events: "0,1,2", ws: "hello,bytes:1.2.3" };

let browser;
before(async () => {
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    args: ["--no-sandbox"],  // root in CI, no user namespace for the sandbox
  });
});
after(() => browser?.close());

async function newPage() {
  const page = await browser.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  page.on("console", (m) => {
    // The browser's own favicon request is not the page's doing.
    if (m.type() === "error" && !m.location().url?.endsWith("/favicon.ico")) {
      errors.push(m.text());
    }
  });
  return { page, errors };
}

describe("a UI with absolute paths on a proxy.listen port", () => {
  let daemon, ui;
  before(async () => {
    ui = await upstreamService("ui", { listen: true, idleTtl: "30s" });
    daemon = await Daemon.start("browser-listen", { ui: ui.spec });
  });
  after(() => daemon?.stop());

  test("the page's fetch stream, EventSource and WebSocket all work", limit, async () => {
    const { page, errors } = await newPage();
    try {
      await page.goto(`http://127.0.0.1:${ui.listenPort}/ui/`);
      const done = {};
      for (const id of Object.keys(want)) {
        const el = page.locator(`#${id}[data-done]`);
        await el.waitFor({ timeout: 20_000 });
        done[id] = await el.getAttribute("data-done");
      }
      assert.deepEqual(done, want);
      assert.deepEqual(errors, []);
    } finally {
      await page.close();
    }
  });
});

describe("the same traffic from the daemon's origin through /upstream/ui", () => {
  let daemon, page, errors;
  before(async () => {
    const ui = await upstreamService("ui");
    daemon = await Daemon.start("browser", { ui: ui.spec });
    ({ page, errors } = await newPage());
    await page.goto(`${daemon.url}/healthz`);
    // The UI's script defines streamChat, listen and echo; they take the path prefix.
    await page.addScriptTag({ url: `${daemon.url}/upstream/ui/static/app.js` });
  });
  after(async () => {
    await page?.close();
    await daemon?.stop();
  });

  test("a streamed fetch read piece by piece", limit, async () => {
    const r = await page.evaluate(() => streamChat("/upstream/ui"));
    assert.equal(r.content.trim(), want.fetch);
    assert.ok(r.reads > 1, `the body came in pieces as written, not at once (${r.reads} reads)`);
  });

  test("an EventSource", limit, async () => {
    assert.equal(await page.evaluate(() => listen("/upstream/ui")), want.events);
  });

  test("a WebSocket", limit, async () => {
    assert.equal(await page.evaluate(() => echo("/upstream/ui")), want.ws);
  });

  test("no errors in the page", limit, () => {
    assert.deepEqual(errors, []);
  });
});
