// Real servers for the client's tests, as the Rust tests start them: redis-server and dynalite on free loopback
// ports, a saver (which creates the table), and gateway processes from the cargo-built binaries, with JWT auth.
// Everything is stopped by `stop()`, and killed if the test process exits first.
//
// Binaries: $CANVAS_BIN_DIR, else $CARGO_TARGET_DIR/debug, else <repo>/target/debug (`cargo build --workspace --bins`).
// With CANVAS_TEST_REDIS=cluster the hot state is a 3 + 3 Redis Cluster instead of one redis-server (the services
// get REDIS_CLUSTER_NODES): the same suite then checks that a cluster behaves the same to a client.

import { spawn, execFileSync } from 'node:child_process';
import { createHmac } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../..');
const BIN_DIR = process.env.CANVAS_BIN_DIR
  || path.join(process.env.CARGO_TARGET_DIR ? path.resolve(REPO, process.env.CARGO_TARGET_DIR) : path.join(REPO, 'target'), 'debug');
export const JWT_SECRET = 'client-test-secret-0123456789abcdef';

const children = new Set();
process.on('exit', () => {
  for (const child of children) child.kill('SIGKILL');
});
// The test runner stops a test file that ran out of time with a signal, which skips 'exit' handlers.
for (const signal of ['SIGTERM', 'SIGINT']) {
  process.once(signal, () => {
    for (const child of children) child.kill('SIGKILL');
    process.exit(128 + (signal === 'SIGTERM' ? 15 : 2));
  });
}

export function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

async function waitFor(what, check, timeoutMs = 20_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check().catch(() => false)) return;
    if (Date.now() > deadline) throw new Error(`${what} did not come up within ${timeoutMs} ms`);
    await sleep(50);
  }
}

function portOpen(port) {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    socket.once('connect', () => { socket.destroy(); resolve(true); });
    socket.once('error', () => resolve(false));
  });
}

async function httpOk(url) {
  const response = await fetch(url, { signal: AbortSignal.timeout(2000) });
  return response.status === 200;
}

/** A child process whose output is kept (in memory, bounded) for failure messages. */
class Child {
  constructor(name, command, args, env) {
    this.name = name;
    this.output = '';
    this.process = spawn(command, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    children.add(this.process);
    const keep = (chunk) => { this.output = (this.output + chunk).slice(-20_000); };
    this.process.stdout.on('data', keep);
    this.process.stderr.on('data', keep);
    this.exited = new Promise((resolve) => this.process.once('exit', (code, signal) => {
      children.delete(this.process);
      resolve({ code, signal });
    }));
  }

  get running() {
    return this.process.exitCode === null && this.process.signalCode === null;
  }

  async stop(signal = 'SIGKILL') {
    if (this.running) this.process.kill(signal);
    await this.exited;
  }
}

export function binary(name) {
  const file = path.join(BIN_DIR, name);
  if (!fs.existsSync(file)) {
    throw new Error(`${file} is missing: run \`cargo build --workspace --bins\` (or set CANVAS_BIN_DIR)`);
  }
  return file;
}

/** An HS256 JWT for the gateway, made the way any token service would. */
export function makeToken(sub, projects = { '*': 'editor' }, ttlSeconds = 3600) {
  const b64 = (value) => Buffer.from(JSON.stringify(value)).toString('base64url');
  const body = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64({ sub, projects, exp: Math.floor(Date.now() / 1000) + ttlSeconds })}`;
  return `${body}.${createHmac('sha256', JWT_SECRET).update(body).digest('base64url')}`;
}

export class Gateway {
  constructor(harness, port, env) {
    this.harness = harness;
    this.port = port;
    this.env = env;
    this.url = `ws://127.0.0.1:${port}`;
    this.http = `http://127.0.0.1:${port}`;
    this.child = null;
  }

  async start() {
    this.child = new Child(`gateway :${this.port}`, binary('gateway'), [], {
      ...this.harness.commonEnv(),
      GATEWAY_ADDR: `127.0.0.1:${this.port}`,
      CANVAS_JWT_SECRET: JWT_SECRET,
      GATEWAY_SHUTDOWN_GRACE_MS: '1000',
      ...this.env,
    });
    await waitFor(`gateway on ${this.port}`, () => httpOk(`${this.http}/readyz`)).catch((err) => {
      throw new Error(`${err.message}\n${this.child.output}`);
    });
    return this;
  }

  /** SIGKILL: the gateway vanishes without closing its sockets. */
  kill() {
    return this.child.stop('SIGKILL');
  }

  /** SIGTERM: the gateway closes its sockets with 1001 and exits. */
  terminate() {
    return this.child.stop('SIGTERM');
  }
}

/** Redis, dynalite and a saver; gateways on demand. */
export class Harness {
  #gateways = [];

  static async start() {
    const harness = new Harness();
    try {
      await harness.#startBackends();
    } catch (err) {
      await harness.stop();
      throw err;
    }
    return harness;
  }

  async #startBackends() {
    this.dir = fs.mkdtempSync(path.join(os.tmpdir(), 'canvas-client-test-'));
    if (process.env.CANVAS_TEST_REDIS === 'cluster') {
      await this.#startCluster();
    } else {
      this.redisPort = await freePort();
      this.redis = new Child('redis', process.env.REDIS_SERVER_BIN || 'redis-server', [
        '--port', String(this.redisPort), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', this.dir,
      ], {});
    }
    this.dynamoPort = await freePort();
    this.dynalite = new Child('dynalite', process.env.NODE_BIN || process.execPath,
      [path.join(REPO, 'tools/dynalite/run.js'), '--port', String(this.dynamoPort), '--host', '127.0.0.1'],
      { CANVAS_PARENT_PID: String(process.pid) });
    if (this.redis) await waitFor('redis-server', () => portOpen(this.redisPort));
    await waitFor('dynalite', () => portOpen(this.dynamoPort));
    const [saverHttp, saverGrpc] = [await freePort(), await freePort()];
    this.saver = new Child('saver', binary('saver'), ['--create-table'], {
      ...this.commonEnv(),
      SAVE_INTERVAL_MS: '200',
      SAVER_HTTP_ADDR: `127.0.0.1:${saverHttp}`,
      SAVER_GRPC_ADDR: `127.0.0.1:${saverGrpc}`,
    });
    // Ready means Redis and DynamoDB are reachable and the table exists, so a gateway's cold load can read it.
    await waitFor('saver', () => httpOk(`http://127.0.0.1:${saverHttp}/readyz`)).catch((err) => {
      throw new Error(`${err.message}\n${this.saver.output}`);
    });
  }

  /** Six cluster-mode redis-servers made into 3 primaries with a replica each, waited for until every node is ok. */
  async #startCluster() {
    const cli = process.env.REDIS_CLI_BIN || 'redis-cli';
    this.clusterPorts = [];
    this.clusterNodes = [];
    for (let i = 0; i < 6; i += 1) {
      const port = await freePort();
      const dir = path.join(this.dir, `node-${port}`);
      fs.mkdirSync(dir);
      this.clusterPorts.push(port);
      this.clusterNodes.push(new Child(`redis-${port}`, process.env.REDIS_SERVER_BIN || 'redis-server', [
        '--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir,
        '--cluster-enabled', 'yes', '--cluster-config-file', path.join(dir, 'nodes.conf'),
        '--cluster-node-timeout', '2000', '--repl-diskless-sync-delay', '0',
      ], {}));
    }
    for (const port of this.clusterPorts) await waitFor(`redis node ${port}`, () => portOpen(port));
    execFileSync(cli, ['--cluster', 'create', ...this.clusterPorts.map((p) => `127.0.0.1:${p}`),
      '--cluster-replicas', '1', '--cluster-yes'], { stdio: 'ignore' });
    const ok = (port) => execFileSync(cli, ['-p', String(port), 'CLUSTER', 'INFO'], { encoding: 'utf8' })
      .includes('cluster_state:ok');
    await waitFor('the Redis Cluster', async () => this.clusterPorts.every(ok), 30_000);
  }

  commonEnv() {
    const redis = this.clusterPorts
      ? { REDIS_CLUSTER_NODES: this.clusterPorts.map((p) => `127.0.0.1:${p}`).join(',') }
      : { REDIS_URL: `redis://127.0.0.1:${this.redisPort}` };
    return {
      ...redis,
      DYNAMODB_ENDPOINT: `http://127.0.0.1:${this.dynamoPort}`,
      AWS_ACCESS_KEY_ID: 'test',
      AWS_SECRET_ACCESS_KEY: 'test',
      AWS_REGION: 'us-east-1',
      AWS_EC2_METADATA_DISABLED: 'true',
      RUST_LOG: 'warn',
    };
  }

  /** A gateway on a free port (or the given one), started and ready. */
  async gateway(env = {}, port = undefined) {
    const gateway = new Gateway(this, port ?? await freePort(), env);
    this.#gateways.push(gateway);
    return gateway.start();
  }

  async stop() {
    for (const gateway of this.#gateways) if (gateway.child) await gateway.child.stop();
    for (const child of [this.saver, this.dynalite, this.redis, ...(this.clusterNodes || [])]) {
      if (child) await child.stop();
    }
    if (this.dir) fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

let counter = 0;
/** A project id no other test uses. */
export function projectId(label) {
  counter += 1;
  return `js-${label}-${process.pid}-${counter}-${Date.now().toString(36)}`;
}

/** Resolves when `check()` is truthy; polls every 20 ms. */
export async function eventually(what, check, timeoutMs = 10_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(20);
  }
}

export { sleep };
