#!/usr/bin/env node
// `npm run demo`: serves the demo page (and the SDK it imports) on http://127.0.0.1:8080/
// and gives it a broker. Development only: it also mints login tokens for any user name.
//
//   npm run demo                          start a broker of its own (target/debug/convoke,
//                                         a temporary data dir, WebTransport on
//                                         127.0.0.1:4434 with a development certificate)
//   npm run demo -- --data-dir DIR [--url https://127.0.0.1:4434/convoke]
//                                         use a broker you started on DIR (its
//                                         webtransport/cert.sha256; tokens from DIR's secret)
//   --port N (default 8080), --convoke PATH (default ../../target/debug/convoke),
//   --wt-listen ADDR (default 127.0.0.1:4434: the browser listener of the demo's own broker)
//
// The page asks /demo/config.json for the certificate hash each time it loads: read from
// the data dir's webtransport/cert.sha256, which the broker rewrites when it renews its
// short-lived development certificate, so a demo left running keeps working.
//
// Node built-ins only.
import { execFileSync, spawn } from 'node:child_process';
import { createReadStream, existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { dirname, extname, join, normalize, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';

const WEB_DIR = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const TYPES = { '.html': 'text/html; charset=utf-8', '.js': 'text/javascript; charset=utf-8', '.css': 'text/css; charset=utf-8', '.map': 'application/json' };

/** Starts a broker with its browser listener; resolves to { url, certSha256, dataDir, stop }. */
/** The development certificate's hash a broker on `dataDir` last wrote, or null. */
function certHash(dataDir) {
  const file = join(dataDir, 'webtransport', 'cert.sha256');
  return existsSync(file) ? readFileSync(file, 'utf8').trim() : null;
}

async function startBroker(convoke, wtListen, workDir) {
  const dataDir = mkdtempSync(join(workDir, 'convoke-demo-'));
  const child = spawn(convoke, [
    'serve', '--data-dir', dataDir, '--listen', '127.0.0.1:0', '--metrics-listen', '',
    '--set', `webtransport.listen=${wtListen}`, '--set', 'webtransport.dev_certificate=true', '--set', 'log.level=warn',
  ], { stdio: ['ignore', 'pipe', 'inherit'] });
  const found = await new Promise((ok, fail) => {
    let out = '';
    child.on('exit', (code) => {
      rmSync(dataDir, { recursive: true, force: true });
      fail(new Error(`the broker exited (code ${code}) before it was ready; its error is above `
        + `(webtransport.listen ${wtListen} in use? pass --wt-listen ADDR)`));
    });
    child.stdout.on('data', (d) => {
      out += d;
      const m = /convoke webtransport=(\S+) path=(\S+) cert_sha256=(\S+)/.exec(out);
      if (m && out.includes('convoke ready')) ok({ url: `https://${m[1]}${m[2]}`, certSha256: m[3] === 'none' ? null : m[3] });
    });
  });
  return {
    ...found,
    dataDir,
    stop: async () => {
      if (child.exitCode === null) {
        const exited = new Promise((r) => child.once('exit', r));
        child.kill('SIGTERM');
        await exited;
      }
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

/**
 * Starts the demo: a broker (its own, with a data dir in `workDir`, unless `dataDir` names
 * a running one's) and the static server. Resolves to { origin, page, url, certSha256,
 * dataDir, stop }.
 */
export async function startDemo({ port = 8080, dataDir, url, convoke, wtListen = '127.0.0.1:4434', workDir = tmpdir() } = {}) {
  convoke ??= process.env.CONVOKE_BIN ?? resolve(WEB_DIR, '../../target/debug/convoke');
  if (!existsSync(convoke)) throw new Error(`no broker binary at ${convoke}: run \`cargo build\` first, or pass --convoke PATH`);
  let broker;
  if (dataDir) {
    if (!existsSync(join(dataDir, 'secret'))) {
      throw new Error(`--data-dir ${dataDir} is not a broker's data dir (it has no secret file to mint tokens with): `
        + 'start one with `convoke serve --data-dir DIR --set webtransport.listen=127.0.0.1:4434 '
        + '--set webtransport.dev_certificate=true`, or leave --data-dir out and the demo starts its own');
    }
    broker = { url: url ?? 'https://127.0.0.1:4434/convoke', certSha256: certHash(dataDir), dataDir, stop: async () => {} };
  } else {
    broker = await startBroker(convoke, wtListen, workDir);
  }
  const server = createServer((req, res) => {
    const u = new URL(req.url ?? '/', 'http://x');
    if (u.pathname === '/demo/config.json') {
      res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'no-store' })
        .end(JSON.stringify({ url: broker.url, certSha256: certHash(broker.dataDir) ?? broker.certSha256 }));
      return;
    }
    if (u.pathname === '/demo/token') {
      const user = u.searchParams.get('user') ?? '';
      try {
        const token = execFileSync(convoke, ['token', '--data-dir', broker.dataDir, '--user', user], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).trim();
        res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ token }));
      } catch (e) {
        res.writeHead(400, { 'content-type': 'application/json' }).end(JSON.stringify({ error: String(e.stderr ?? e) }));
      }
      return;
    }
    if (u.pathname === '/') {
      res.writeHead(302, { location: '/demo/' }).end();
      return;
    }
    const path = normalize(decodeURIComponent(u.pathname));
    const file = join(WEB_DIR, path.endsWith('/') ? `${path}index.html` : path);
    const allowed = file.startsWith(join(WEB_DIR, 'demo')) || file.startsWith(join(WEB_DIR, 'build', 'src'));
    if (!allowed || !existsSync(file) || !statSync(file).isFile()) {
      res.writeHead(404).end('not found');
      return;
    }
    res.writeHead(200, { 'content-type': TYPES[extname(file)] ?? 'application/octet-stream', 'cache-control': 'no-store' });
    createReadStream(file).pipe(res);
  });
  try {
    await new Promise((ok, fail) => {
      server.once('error', fail);
      server.listen(port, '127.0.0.1', ok);
    });
  } catch (e) {
    await broker.stop();
    throw e.code === 'EADDRINUSE'
      ? new Error(`port ${port} on 127.0.0.1 is in use: pass --port N for the demo page`)
      : e;
  }
  const origin = `http://127.0.0.1:${server.address().port}`;
  return {
    origin,
    page: `${origin}/demo/`,
    url: broker.url,
    certSha256: broker.certSha256,
    dataDir: broker.dataDir,
    stop: async () => {
      server.close();
      await broker.stop();
    },
  };
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  let args;
  try {
    ({ values: args } = parseArgs({
      options: {
        port: { type: 'string', default: '8080' },
        'data-dir': { type: 'string' },
        url: { type: 'string' },
        convoke: { type: 'string' },
        'wt-listen': { type: 'string' },
      },
      strict: true,
    }));
    if (!/^\d+$/.test(args.port) || Number(args.port) > 65535) throw new Error(`--port ${args.port} is not a port number`);
  } catch (e) {
    console.error(`convoke demo: ${e.message}\nusage: npm run demo -- [--port N] [--wt-listen ADDR] [--convoke PATH] [--data-dir DIR [--url URL]]`);
    process.exit(2);
  }
  // Signals are taken from here on, before the broker starts: one during the start stops
  // it once started. SIGHUP too: a closed terminal would otherwise leave the broker
  // running (it takes SIGHUP itself as "reload the certificate") with its port taken.
  let demo;
  let quit = false;
  const stop = async () => {
    quit = true;
    if (demo) {
      await demo.stop();
      process.exit(0);
    }
  };
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP']) process.on(signal, stop);
  try {
    demo = await startDemo({
      port: Number(args.port),
      dataDir: args['data-dir'],
      url: args.url,
      convoke: args.convoke,
      wtListen: args['wt-listen'],
    });
  } catch (e) {
    console.error(`convoke demo: ${e.message}`);
    process.exit(1);
  }
  if (quit) await stop();
  console.log(`Convoke web SDK demo: open ${demo.page} (two tabs, two user names)`);
  console.log(`broker (WebTransport): ${demo.url}`);
  console.log(`development certificate sha-256: ${demo.certSha256 ?? 'none (the broker serves its own certificate)'}`);
}
