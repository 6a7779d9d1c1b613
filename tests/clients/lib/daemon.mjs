// Starts a gpuvisor daemon for one test file, with upstream.mjs (or any command) as its
// services, and stops it and everything it started afterwards, pass or fail.
//
// The build comes from $GPUVISOR_BUILD (ctest sets it); temp dirs go under $TEST_TMPDIR.
import { spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, openSync, readFileSync, writeFileSync } from "node:fs";
import net from "node:net";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
export const upstreamScript = path.join(here, "..", "upstream.mjs");

export function buildDir() {
  const build = process.env.GPUVISOR_BUILD;
  if (!build) throw new Error("set GPUVISOR_BUILD to the build directory (ctest does)");
  return path.resolve(build);
}

export function tempDir(prefix) {
  const root = process.env.TEST_TMPDIR ?? "/tmp";
  mkdirSync(root, { recursive: true });
  return mkdtempSync(path.join(root, `${prefix}-`));
}

// A port nothing listens on right now: bind port 0, read it, close.
export function freePort() {
  return new Promise((ok, fail) => {
    const server = net.createServer();
    server.on("error", fail);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => ok(port));
    });
  });
}

// Every test's own limit: a proxy that hangs fails that test, not the whole run at ctest's.
export const limit = { timeout: 60_000 };

export const sleep = (ms) => new Promise((done) => setTimeout(done, ms));

// The config of one upstream.mjs service. `listen: true` gives it a proxy.listen port of its own.
export async function upstreamService(name, { models = [], listen = false, idleTtl } = {}) {
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const spec = {
    command: [process.execPath, upstreamScript, "--port", String(port), "--name", name],
    health: { http: `${url}/health` },
    proxy: { url },
  };
  if (models.length) spec.proxy.models = models;  // an empty list is a config error
  let listenPort;
  if (listen) {
    listenPort = await freePort();
    spec.proxy.listen = `127.0.0.1:${listenPort}`;
  }
  if (idleTtl) spec.idle_ttl = idleTtl;
  return { name, port, url, listenPort, spec };
}

const running = new Set();
// A test runner that dies still takes its daemons with it (their services are then orphaned,
// which is why the normal path is stop(): SIGTERM, and the daemon stops its services).
process.on("exit", () => {
  for (const child of running) child.kill("SIGKILL");
});

export class Daemon {
  // services: {name: spec}. The config is written as JSON, which YAML reads as it is.
  static async start(label, services) {
    const build = buildDir();
    const dir = tempDir(`clients-${label}`);
    mkdirSync(path.join(dir, "gpu"));
    const config = path.join(dir, "gpuvisor.yaml");
    writeFileSync(config, JSON.stringify({ services }, null, 2) + "\n");
    const log = path.join(dir, "daemon.log");
    const child = spawn(path.join(build, "gpuvisor"),
      ["serve", "--config", config, "--listen", "127.0.0.1:0", "--state-dir",
       path.join(dir, "state"), "--log-level", "info"], {
        env: {
          ...process.env,
          GPUVISOR_NVML_LIBRARY: path.join(build, "libgpuvisor-fake-nvml.so"),
          FAKE_NVML_DIR: path.join(dir, "gpu"),
        },
        stdio: ["ignore", "pipe", openSync(log, "a")],
      });
    running.add(child);
    const exited = new Promise((done) => child.on("exit", (code, signal) => {
      running.delete(child);
      done(code ?? signal);
    }));
    const url = await new Promise((ok, fail) => {
      child.once("error", fail);  // not started at all: missing, or being linked (EACCES)
      let text = "";
      child.stdout.on("data", (d) => {
        text += d;
        const m = text.match(/listening on (http:\/\/\S+)/);
        if (m) ok(m[1]);
      });
      exited.then((code) => fail(new Error(
        `the daemon exited (${code}) before listening: ${readFileSync(log, "utf8").trim()}`)));
    });
    const daemon = new Daemon(child, exited, url, dir, log);
    // A crash shows up in the tests as refused connections: say what happened, and where.
    exited.then((code) => {
      if (!daemon.stopping) {
        const tail = readFileSync(log, "utf8").split("\n").slice(-8).join("\n");
        console.error(`gpuvisor (${label}) exited (${code}) during the tests; ${log} ends:\n` +
                      tail.replace(/^/gm, "  "));
      }
    });
    return daemon;
  }

  constructor(child, exited, url, dir, log) {
    Object.assign(this, { child, exited, url, dir, log });
  }

  get alive() {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  async api(method, route, body) {
    const r = await fetch(this.url + route, {
      method, headers: body ? { "content-type": "application/json" } : {},
      body: body ? JSON.stringify(body) : undefined,
    });
    const text = await r.text();
    if (!r.ok) throw new Error(`${method} ${route}: ${r.status} ${text}`);
    return text ? JSON.parse(text) : null;
  }

  async state(service) {
    return (await this.api("GET", `/api/v1/services/${service}`)).state;
  }

  // Starts the service if it is not running; returns once it is ready.
  async ensure(service) {
    await this.api("POST", `/api/v1/services/${service}/ensure`);
    return this.waitState(service, ["ready", "busy"]);
  }

  // Polls until the service is in one of the states; returns it.
  async waitState(service, states, timeoutMs = 15_000) {
    const want = [].concat(states);
    const deadline = Date.now() + timeoutMs;
    let last;
    while (Date.now() < deadline) {
      last = await this.state(service);
      if (want.includes(last)) return last;
      await sleep(50);
    }
    throw new Error(`${service} stayed ${last}, not ${want.join("|")}, for ${timeoutMs} ms`);
  }

  // Records service.state_changed events from now on: {service, from, to, reason, at}.
  async watchStates() {
    const controller = new AbortController();
    const r = await fetch(`${this.url}/api/v1/events?types=service.state_changed`,
                          { signal: controller.signal });
    const seen = [];
    (async () => {
      const decoder = new TextDecoder();
      let text = "";
      try {
        for await (const part of r.body) {
          text += decoder.decode(part, { stream: true });
          let end;
          while ((end = text.indexOf("\n\n")) >= 0) {
            const frame = text.slice(0, end);
            text = text.slice(end + 2);
            const data = frame.split("\n").filter((l) => l.startsWith("data: "))
              .map((l) => l.slice(6)).join("\n");
            if (!data) continue;
            const event = JSON.parse(data);
            if (event.type === "service.state_changed") {
              seen.push({ ...event.data, at: Date.now() });
            }
          }
        }
      } catch {
        // aborted by close()
      }
    })();
    return { seen, close: () => controller.abort() };
  }

  // SIGTERM (the daemon stops its services), then SIGKILL if it hangs.
  async stop() {
    this.stopping = true;
    if (!this.alive) return this.exited;
    this.child.kill("SIGTERM");
    const timer = setTimeout(() => this.child.kill("SIGKILL"), 10_000);
    const code = await this.exited;
    clearTimeout(timer);
    return code;
  }
}

// What an upstream.mjs process saw, asked directly (not through the proxy: that would start it
// or keep it busy).
export async function upstreamStats(service) {
  const r = await fetch(`${service.url}/stats`);
  return r.json();
}
