// The dashboard in headless Chromium (Debian's), driven by Playwright: the daemon runs its
// embedded demo config on the fake NVML library; the test clicks "ensure" on a service and sees
// its state, its slice of the GPU bar, the plan and the event log change without a reload; a
// lease made through the API appears, and the page's "release" ends it; then it saves a
// screenshot.
//
//   node tests/dashboard/dashboard_test.mjs BUILD_DIR     (ctest runs it as "dashboard")
import { spawn } from "node:child_process";
import { mkdirSync, mkdtempSync } from "node:fs";
import path from "node:path";
import { chromium } from "playwright-core";

const build = path.resolve(process.argv[2] ?? "build");
const out = process.env.TEST_TMPDIR ?? "/tmp";
mkdirSync(out, { recursive: true });
const dir = mkdtempSync(path.join(out, "dashboard-"));
mkdirSync(path.join(dir, "gpu"));

const daemon = spawn(path.join(build, "gpuvisor"),
  ["serve", "--listen", "127.0.0.1:0", "--state-dir", path.join(dir, "state")], {
    env: {
      ...process.env,
      PATH: `${build}:${process.env.PATH}`,
      GPUVISOR_NVML_LIBRARY: path.join(build, "libgpuvisor-fake-nvml.so"),
      FAKE_NVML_DIR: path.join(dir, "gpu"),
      FAKE_PROVIDER_DIR: path.join(dir, "provider"),
    },
    stdio: ["ignore", "pipe", "inherit"],
  });
const exited = new Promise((done) => daemon.on("exit", done));
const url = await new Promise((ok, fail) => {
  let text = "";
  daemon.stdout.on("data", (d) => {
    text += d;
    const m = text.match(/listening on (http:\/\/\S+)/);
    if (m) ok(m[1]);
  });
  exited.then((code) => fail(new Error(`the daemon exited (${code}) before listening`)));
});

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
  if (errors.length) throw new Error("errors in the page: " + errors.join("; "));
  console.log(`dashboard: ensure from the page showed live; screenshot ${shot}`);
} catch (e) {
  failed = true;
  console.error("dashboard test failed:", e);
} finally {
  await browser?.close();
  daemon.kill("SIGTERM");  // it stops the demo's services before it exits
  await exited;
}
process.exit(failed ? 1 : 0);
