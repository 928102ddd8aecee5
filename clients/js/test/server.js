// Starts a real `natter serve` for tests: an ephemeral port (or a given one), a fresh data
// directory, and helpers to kill and restart it. Used by the SDK tests and the browser tests.

import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** The repository root. */
export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');

/** The server binary: $NATTER_BIN, else $CARGO_TARGET_DIR/debug/natter, else target/debug/natter. */
export function natterBinary() {
  if (process.env.NATTER_BIN) return process.env.NATTER_BIN;
  const target = process.env.CARGO_TARGET_DIR ? path.resolve(ROOT, process.env.CARGO_TARGET_DIR) : path.join(ROOT, 'target');
  const binary = path.join(target, 'debug', 'natter');
  if (!existsSync(binary)) {
    throw new Error(`${binary} does not exist: build it with \`cargo build -p natter-server --bin natter\``);
  }
  return binary;
}

/**
 * A running server.
 * @typedef {object} TestServer
 * @property {string} url `http://127.0.0.1:PORT`
 * @property {number} port
 * @property {string} dataDir
 * @property {() => Promise<void>} kill SIGKILL: a crash, nothing flushed but what is committed.
 * @property {() => Promise<void>} stop SIGTERM: a clean shutdown (clients are told to reconnect).
 * @property {() => Promise<void>} restart Start again on the same port and data directory.
 * @property {() => Promise<void>} close Stop and remove the data directory.
 * @property {() => string} log What the server wrote to stderr.
 */

/**
 * @param {{args?: string[], port?: number}} [options] Extra `natter serve` flags.
 * @returns {Promise<TestServer>}
 */
export async function startServer(options = {}) {
  const dataDir = mkdtempSync(path.join(tmpdir(), 'natter-js-test-'));
  const extra = [
    // Tests register many users from one address.
    '--login-attempts-per-minute', '100000',
    '--sends-per-second', '1000',
    ...(options.args ?? []),
  ];
  /** @type {import('node:child_process').ChildProcess | undefined} */
  let child;
  let stderr = '';
  let port = options.port ?? 0;

  const launch = () => new Promise((resolve, reject) => {
    const proc = spawn(natterBinary(), ['serve', '--listen', `127.0.0.1:${port}`, '--data-dir', dataDir, ...extra], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, NATTER_LOG: process.env.NATTER_LOG ?? 'warn' },
    });
    child = proc;
    let out = '';
    const timer = setTimeout(() => {
      proc.kill('SIGKILL');
      reject(new Error(`natter did not start in time:\n${stderr}`));
    }, 15_000);
    proc.stderr.on('data', (chunk) => {
      stderr += chunk;
      if (stderr.length > 200_000) stderr = stderr.slice(-100_000);
    });
    proc.stdout.on('data', (chunk) => {
      out += chunk;
      const match = /natter listening on http:\/\/127\.0\.0\.1:(\d+)/.exec(out);
      if (match) {
        clearTimeout(timer);
        port = Number(match[1]);
        resolve(undefined);
      }
    });
    proc.on('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`natter exited (${code ?? signal}) before listening:\n${stderr}`));
    });
  });

  const exit = (/** @type {NodeJS.Signals} */ signal) => new Promise((resolve) => {
    const proc = child;
    if (!proc || proc.exitCode !== null || proc.signalCode !== null) {
      resolve(undefined);
      return;
    }
    proc.once('exit', () => resolve(undefined));
    proc.kill(signal);
  });

  // The port may still be held for a moment after a kill: retry the bind briefly.
  const launchRetrying = async () => {
    for (let i = 0; ; i++) {
      try {
        await launch();
        return;
      } catch (e) {
        if (i >= 20 || !/cannot listen|Address already in use/i.test(String(e))) throw e;
        await new Promise((r) => setTimeout(r, 150));
      }
    }
  };

  await launchRetrying();
  return {
    get url() {
      return `http://127.0.0.1:${port}`;
    },
    get port() {
      return port;
    },
    dataDir,
    kill: () => exit('SIGKILL'),
    stop: () => exit('SIGTERM'),
    restart: launchRetrying,
    close: async () => {
      await exit('SIGKILL');
      rmSync(dataDir, { recursive: true, force: true });
    },
    log: () => stderr,
  };
}
