// The dashboard in headless Chromium (Debian's), driven by Playwright: the daemon runs its
// embedded demo config on the fake NVML library; the test clicks "ensure" on a service and sees
// its state, its slice of the GPU bar, the plan and the event log change without a reload; a
// lease made through the API appears, and the page's "release" ends it; then it saves a
// screenshot.
//
//   node tests/dashboard/dashboard_test.mjs BUILD_DIR     (ctest runs it as "dashboard")
import { spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import path from "node:path";
import { chromium } from "playwright-core";

const build = path.resolve(process.argv[2] ?? "build");
const out = process.env.TEST_TMPDIR ?? "/tmp";
mkdirSync(out, { recursive: true });

// A daemon on the fake NVML library (the embedded demo config unless a config is given); its
// URL once it listens.
async function startDaemon(name, config) {
  const dir = mkdtempSync(path.join(out, name + "-"));
  mkdirSync(path.join(dir, "gpu"));
  const args = ["serve", "--listen", "127.0.0.1:0", "--state-dir", path.join(dir, "state")];
  if (config) {
    writeFileSync(path.join(dir, "gpuvisor.yaml"), config);
    args.push("--config", path.join(dir, "gpuvisor.yaml"));
  }
  const proc = spawn(path.join(build, "gpuvisor"), args, {
    env: {
      ...process.env,
      PATH: `${build}:${process.env.PATH}`,
      GPUVISOR_NVML_LIBRARY: path.join(build, "libgpuvisor-fake-nvml.so"),
      FAKE_NVML_DIR: path.join(dir, "gpu"),
      FAKE_PROVIDER_DIR: path.join(dir, "provider"),
    },
    stdio: ["ignore", "pipe", "inherit"],
  });
  const exited = new Promise((done) => proc.on("exit", done));
  const url = await new Promise((ok, fail) => {
    let text = "";
    proc.stdout.on("data", (d) => {
      text += d;
      const m = text.match(/listening on (http:\/\/\S+)/);
      if (m) ok(m[1]);
    });
    exited.then((code) => fail(new Error(`the daemon exited (${code}) before listening`)));
  });
  return { url, stop: async () => { proc.kill("SIGTERM"); await exited; } };
}

const freePort = () => new Promise((ok) => {
  const server = createServer().listen(0, "127.0.0.1", () => {
    const { port } = server.address();
    server.close(() => ok(port));
  });
});

// Two 16 GB services on one simulated 24 GB GPU, each behind the proxy.
async function queueConfig() {
  let services = "";
  for (const name of ["a", "b"]) {
    const port = await freePort();
    services += `  ${name}:
    command: [gpuvisor-testsvc, --port, "${port}", --vram-mb, "16000"]
    vram_mb: 16000
    priority: ${name === "a" ? 10 : 20}
    health: {http: "http://127.0.0.1:${port}/health"}
    proxy: {url: "http://127.0.0.1:${port}", wait: 1m}
`;
  }
  return "services:\n" + services;
}

const daemon = await startDaemon("dashboard");
const url = daemon.url;
let second;

let browser;
let failed = false;
try {
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    args: ["--no-sandbox"],  // root in CI, no user namespace for the sandbox
  });
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  await page.goto(url + "/");
  await page.locator("#link.live").waitFor();
  const tts = page.locator('tr[data-service="tts"]');
  await tts.locator('.state[data-state="stopped"]').waitFor();
  await page.locator('.gpu[data-gpu="0"]').waitFor();  // the simulated 24 GB GPU
  await tts.locator('button[data-action="ensure"]').click();
  // Live, from the event stream: no reload in between.
  await tts.locator('.state[data-state="ready"]').waitFor();
  await page.locator('.gpu[data-gpu="0"] .seg[data-owner="tts"]').waitFor();
  await page.locator("#plans li", { hasText: "tts: GPU 0" }).first().waitFor();
  await page.locator('#events li[data-type="service.state_changed"]', { hasText: "tts" })
    .first().waitFor();
  // A lease from outside the page shows up live, and the page lets it go.
  const granted = await fetch(url + "/api/v1/leases", {
    method: "POST",
    body: JSON.stringify({ vram_mb: 1024, holder: "notebook", ttl: "1h" }),
  });
  if (granted.status !== 201) throw new Error("lease: HTTP " + granted.status + " " + await granted.text());
  const lease = page.locator("#leases tr", { hasText: "notebook" });
  await lease.waitFor();
  await lease.locator('button[data-action="release"]').click();
  await lease.waitFor({ state: "detached" });
  const shot = path.join(out, "dashboard.png");
  await page.screenshot({ path: shot, fullPage: true });

  // The queue panel: b waits while a streams, live, and is gone from it once placed.
  second = await startDaemon("dashboard-queue", await queueConfig());
  await page.goto(second.url + "/");
  await page.locator("#link.live").waitFor();
  const stream = fetch(second.url + "/upstream/a/stream?n=30&interval_ms=100").then((r) => r.text());
  await page.locator('tr[data-service="a"] .state[data-state="busy"]').waitFor();
  const ensured = fetch(second.url + "/api/v1/services/b/ensure", { method: "POST" });
  const row = page.locator('#queue tr[data-queued="b"]');
  await row.filter({ hasText: "a" }).waitFor();
  await page.screenshot({ path: path.join(out, "dashboard-queue.png"), fullPage: true });
  await stream;
  if (!(await ensured).ok) throw new Error("ensure b after the queue failed");
  await row.waitFor({ state: "detached" });
  await page.locator("#swaps", { hasText: "1 swap in the last minute" }).waitFor();
  if (errors.length) throw new Error("errors in the page: " + errors.join("; "));
  console.log(`dashboard: ensure from the page showed live, and the queue; screenshot ${shot}`);
} catch (e) {
  failed = true;
  console.error("dashboard test failed:", e);
} finally {
  await browser?.close();
  await daemon.stop();  // it stops the demo's services before it exits
  await second?.stop();
}
process.exit(failed ? 1 : 0);
