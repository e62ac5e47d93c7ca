// The chaos run's driver (benches/chaos.sh starts it; see there for the
// settings). Three instances of the server on one PostgreSQL, a fake Telegram
// Bot API that fails on demand, mixed load, faults, then the invariants.
//
// Load, against any live instance:
// - movements with idempotency keys, retried with the same key on any error
//   or timeout until acknowledged;
// - uploads of movements (each row with a reference of its own);
// - graphql-ws subscribers of one product each, resuming after their last
//   cursor whenever their connection drops (to whichever instance is up);
// - test alerts through the outbox; logins, some with a wrong password.
// Faults: kill -9 of a random instance every 20 to 40 s, restarted 1 to 3 s
// later; one PostgreSQL restart; the events listeners' connections killed
// every 15 s; the Bot API answering 429, 500, or hanging, in turns; SIGTERM of
// the instance that just received an upload.
// Checks: see `check` calls at the end. Prints one line per check and the
// figures; exits 1 when an invariant does not hold.

import { spawn, execFileSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { openSync, readFileSync } from 'node:fs';
import http from 'node:http';

import { createClient } from 'graphql-ws';
import WebSocket from 'ws';

const env = process.env;
const BIN = env.CHAOS_BIN;
const DATABASE_URL = env.CHAOS_DATABASE_URL;
const SECONDS = Number(env.CHAOS_SECONDS ?? 600);
const BASE_PORT = Number(env.CHAOS_PORT ?? 4401);
const LOGS = env.CHAOS_LOGS;
const PG_RESTART = env.CHAOS_PG_RESTART ?? '';
const INSTANCES = 3;
const PRODUCTS = 6;
const WRITERS = 6;
const SUBSCRIBERS_PER_PRODUCT = 2;
const REQUEST_TIMEOUT_MS = 5000;
/** After a restart an instance gets this long before a 5xx counts. */
const GRACE_MS = 5000;
const PASSWORD = 'chaos-password-1';
const CHAT = '-100777';
const start = Date.now();
const since = () => ((Date.now() - start) / 1000).toFixed(1);
const say = (...a) => console.error(`[chaos +${since()}s]`, ...a);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const rand = (lo, hi) => lo + Math.random() * (hi - lo);
const pick = (xs) => xs[Math.floor(Math.random() * xs.length)];

// ---- the fake Bot API ------------------------------------------------------
let botMode = 'ok';
const botModesSeen = new Set();
const delivered = new Map(); // text -> times Telegram got it
const hung = [];
const bot = http.createServer((req, res) => {
  let body = '';
  req.on('data', (c) => (body += c));
  req.on('end', () => {
    const reply = (status, json) => {
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(JSON.stringify(json));
    };
    if (req.url.endsWith('/getMe')) {
      return reply(200, { ok: true, result: { id: 1, is_bot: true, first_name: 'Chaos', username: 'chaos_bot' } });
    }
    let text = '';
    try {
      text = JSON.parse(body).text ?? '';
    } catch {}
    switch (botMode) {
      case '429':
        return reply(429, { ok: false, error_code: 429, description: 'Too Many Requests: retry after 1', parameters: { retry_after: 1 } });
      case '500':
        return reply(500, { ok: false, error_code: 500, description: 'Internal Server Error' });
      case 'hang':
        // Telegram got it; the answer never comes.
        delivered.set(text, (delivered.get(text) ?? 0) + 1);
        hung.push(res);
        return;
      default:
        delivered.set(text, (delivered.get(text) ?? 0) + 1);
        return reply(200, { ok: true, result: { message_id: delivered.size, date: 0, chat: { id: Number(CHAT), type: 'group' } } });
    }
  });
});
await new Promise((r) => bot.listen(0, '127.0.0.1', r));
const BOT_URL = `http://127.0.0.1:${bot.address().port}`;

// ---- instances -------------------------------------------------------------
const instances = Array.from({ length: INSTANCES }, (_, i) => ({
  i,
  port: BASE_PORT + i,
  proc: null,
  up: false,
  /** [from, to] during which this instance's 5xx do not count. */
  windows: [],
  rssMaxKb: 0,
  rssLastKb: 0,
  starts: 0,
}));
const allWindows = []; // PostgreSQL restarts: every instance
const serverEnv = {
  ...env,
  APP_ENV: 'development',
  HOST: '127.0.0.1',
  DATABASE_URL,
  JWT_SECRET: 'chaos-secret-chaos-secret-chaos-secret-1',
  ADMIN_PASSWORD: PASSWORD,
  THROTTLE_DEFAULT_LIMIT: '100000000',
  THROTTLE_LOGIN_LIMIT: '100000000',
  THROTTLE_ALERTS_LIMIT: '100000000',
  THROTTLE_PROBE_LIMIT: '100000000',
  TELEGRAM_API_URL: BOT_URL,
  TELEGRAM_BOT_TOKEN: '123456:CHAOS-token-for-the-fake-bot-api_0',
  TELEGRAM_CHAT_IDS: CHAT,
  ALERT_RETRY_BASE_SECONDS: '1',
  ALERT_RETRY_MAX_SECONDS: '4',
  ALERT_MAX_ATTEMPTS: '12',
  ALERT_LEASE_SECONDS: '10',
  ALERT_SEND_TIMEOUT_SECONDS: '2',
  ALERT_POLL_SECONDS: '1',
  ALERT_CHAT_MESSAGES_PER_SECOND: '30',
  ALERT_GLOBAL_MESSAGES_PER_SECOND: '30',
  UPLOAD_LEASE_SECONDS: '10',
  UPLOAD_POLL_SECONDS: '1',
  UPLOAD_BATCH_SIZE: '200',
  DB_MAX_CONNECTIONS: '8',
  DB_ACQUIRE_TIMEOUT_MS: '3000',
  RUST_LOG: 'warn',
};

async function live(inst) {
  try {
    const r = await fetch(`http://127.0.0.1:${inst.port}/api/v1/health/live`, { signal: AbortSignal.timeout(1000) });
    return r.ok;
  } catch {
    return false;
  }
}

// Whatever ends the driver, no instance outlives it.
process.on('exit', () => {
  for (const inst of instances) inst.proc?.kill('SIGKILL');
});
process.on('uncaughtException', (err) => {
  console.error(err);
  console.log('FAIL the driver itself failed');
  process.exit(1);
});

async function startInstance(inst) {
  if (!inst.proc && (await live(inst))) {
    throw new Error(`port ${inst.port} already answers: a server from another run? (CHAOS_PORT)`);
  }
  const log = openSync(`${LOGS}/instance-${inst.i}.log`, 'a');
  inst.proc = spawn(BIN, ['serve'], { env: { ...serverEnv, PORT: String(inst.port) }, stdio: ['ignore', log, log] });
  inst.starts += 1;
  const deadline = Date.now() + 60_000;
  while (Date.now() < deadline) {
    if (await live(inst)) {
      inst.up = true;
      return;
    }
    await sleep(100);
  }
  throw new Error(`instance ${inst.i} did not start; see ${LOGS}/instance-${inst.i}.log`);
}

function stopInstance(inst, signal) {
  inst.up = false;
  const proc = inst.proc;
  const exited = new Promise((r) => (proc.exitCode !== null ? r() : proc.once('exit', r)));
  proc.kill(signal);
  return exited;
}

/** Down from now until it is back and GRACE_MS have passed. */
async function restart(inst, signal, pauseMs) {
  const window = [Date.now(), Infinity];
  inst.windows.push(window);
  await stopInstance(inst, signal);
  await sleep(pauseMs);
  await startInstance(inst);
  window[1] = Date.now() + GRACE_MS;
}

const upInstances = () => instances.filter((x) => x.up);
const anyUp = () => pick(upInstances().length ? upInstances() : instances);

// ---- HTTP with bookkeeping ---------------------------------------------------
const figures = { requests: 0, fiveXx: 0, fiveXxOutside: [], networkErrors: 0, worstAckMs: 0 };
function inWindow(inst, at) {
  return [...inst.windows, ...allWindows].some(([a, b]) => at >= a && at <= b);
}

async function call(inst, path, init) {
  figures.requests += 1;
  const at = Date.now();
  try {
    const r = await fetch(`http://127.0.0.1:${inst.port}${path}`, { ...init, signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS) });
    if (r.status >= 500) {
      figures.fiveXx += 1;
      if (!inWindow(inst, at) && !inWindow(inst, Date.now())) {
        figures.fiveXxOutside.push(`${new Date(at).toISOString()} instance ${inst.i} ${path} ${r.status}`);
      }
    }
    return r;
  } catch (err) {
    figures.networkErrors += 1;
    throw err;
  }
}

let token = '';
async function gql(inst, query, variables, auth = token) {
  const r = await call(inst, '/graphql', {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(auth ? { authorization: `Bearer ${auth}` } : {}) },
    body: JSON.stringify({ query, variables }),
  });
  const body = await r.json();
  return { status: r.status, body };
}

async function login(inst, password = PASSWORD) {
  const { body } = await gql(
    inst,
    'mutation ($p: String!) { login(input: { email: "admin@stockroom.local", password: $p }) { accessToken } }',
    { p: password },
    '',
  );
  return body.data?.login?.accessToken;
}

function psql(sql) {
  return execFileSync('psql', [DATABASE_URL, '-AtqX', '-v', 'ON_ERROR_STOP=1', '-c', sql], {
    encoding: 'utf8',
    maxBuffer: 1 << 30,
  }).trim();
}

// ---- setup -------------------------------------------------------------------
say(`fake Bot API on ${BOT_URL}; starting ${INSTANCES} instances`);
await startInstance(instances[0]); // migrates and seeds first
await Promise.all(instances.slice(1).map(startInstance));
token = await login(instances[0]);
if (!token) throw new Error('the admin cannot log in');
// A token for the whole run: renewed every 5 minutes.
const renew = setInterval(async () => {
  try {
    const t = await login(anyUp());
    if (t) token = t;
  } catch {}
}, 300_000);

const products = [];
for (let p = 0; p < PRODUCTS; p++) {
  const { body } = await gql(
    instances[0],
    'mutation ($i: CreateProductInput!) { createProduct(input: $i) { id sku version } }',
    { i: { sku: `CHAOS-${p}`, name: `Chaos product ${p}`, initialStock: 1000000, lowStockThreshold: 0 } },
  );
  if (!body.data) throw new Error(`createProduct: ${JSON.stringify(body)}`);
  products.push(body.data.createProduct);
}
say(`${PRODUCTS} products`);

let stopping = false;
const acked = new Map(); // key -> { attempts, ms }
const retriedKeys = new Set();

// ---- movements ---------------------------------------------------------------
async function writer() {
  while (!stopping) {
    const product = pick(products);
    const key = `chaos-${randomUUID()}`;
    const kind = Math.random() < 0.5 ? 'INBOUND' : 'OUTBOUND';
    const begun = Date.now();
    for (let attempt = 1; ; attempt++) {
      try {
        const { body } = await gql(
          anyUp(),
          'mutation ($i: StockMovementInput!) { recordStockMovement(input: $i) { id } }',
          { i: { productId: product.id, kind, quantity: 1 + Math.floor(Math.random() * 3), idempotencyKey: key } },
        );
        if (body.data?.recordStockMovement) {
          const ms = Date.now() - begun;
          acked.set(key, { attempts: attempt, ms });
          figures.worstAckMs = Math.max(figures.worstAckMs, ms);
          break;
        }
      } catch {}
      retriedKeys.add(key);
      await sleep(rand(50, 250));
    }
  }
}

// ---- subscribers ---------------------------------------------------------------
const subscribers = [];
function subscriber(product) {
  const s = { product: product.id, startAfter: product.version, cursors: [], errors: [], connections: 0 };
  const payload = {
    query: 'subscription ($p: ID!, $after: String) { stockChanged(productId: $p, after: $after) { cursor } }',
    variables: { p: product.id, after: String(product.version) },
  };
  s.client = createClient({
    url: () => `ws://127.0.0.1:${anyUp().port}/graphql/ws`,
    webSocketImpl: WebSocket,
    connectionParams: () => ({ Authorization: `Bearer ${token}` }),
    retryAttempts: Number.MAX_SAFE_INTEGER,
    retryWait: () => sleep(rand(100, 500)),
    shouldRetry: () => true,
    keepAlive: 5000,
    on: { connected: () => (s.connections += 1) },
  });
  const resubscribe = () =>
    s.client.subscribe(payload, {
      next: ({ data, errors }) => {
        if (errors) {
          s.errors.push(errors[0]?.extensions?.code ?? JSON.stringify(errors));
          return;
        }
        s.cursors.push(Number(data.stockChanged.cursor));
        payload.variables.after = data.stockChanged.cursor;
      },
      // A stream that ended (an error item, then complete): subscribe again
      // after the last cursor, unless the run is over.
      error: () => !stopping && setTimeout(resubscribe, 200),
      complete: () => !stopping && setTimeout(resubscribe, 200),
    });
  resubscribe();
  subscribers.push(s);
}
for (const product of products) {
  for (let k = 0; k < SUBSCRIBERS_PER_PRODUCT; k++) subscriber(product);
}

// ---- uploads -------------------------------------------------------------------
const uploads = []; // { id, rows, tag }
let uploadSeq = 0;
async function upload(rows, inst = anyUp()) {
  const tag = `chaos-up${uploadSeq++}`;
  const lines = ['sku,kind,quantity,reference'];
  for (let r = 0; r < rows; r++) lines.push(`CHAOS-${r % PRODUCTS},inbound,1,${tag}-r${r}`);
  for (let attempt = 0; attempt < 20; attempt++) {
    try {
      const r = await call(inst, `/api/v1/uploads?kind=STOCK_MOVEMENTS&filename=${tag}.csv`, {
        method: 'POST',
        headers: { authorization: `Bearer ${token}`, 'content-type': 'text/csv' },
        body: lines.join('\n') + '\n',
      });
      const body = await r.json();
      if (body.id) {
        uploads.push({ id: body.id, rows, tag });
        return inst;
      }
    } catch {}
    await sleep(500);
    inst = anyUp();
  }
  say(`upload ${tag} could not be queued`);
  return inst;
}
async function uploader() {
  while (!stopping) {
    await upload(300);
    await sleep(rand(8000, 15000));
  }
}

// ---- alerts and logins ---------------------------------------------------------
let alertSeq = 0;
async function alerter() {
  while (!stopping) {
    try {
      await gql(anyUp(), 'mutation ($m: String) { sendTestAlert(message: $m) { id } }', { m: `chaos alert ${alertSeq++}` });
    } catch {}
    await sleep(rand(500, 1500));
  }
}
const logins = { ok: 0, refused: 0 };
async function loginLoad() {
  while (!stopping) {
    try {
      const wrong = Math.random() < 0.3;
      const t = await login(anyUp(), wrong ? 'not-the-password' : PASSWORD);
      t ? logins.ok++ : logins.refused++;
    } catch {}
    await sleep(rand(300, 900));
  }
}

// ---- faults --------------------------------------------------------------------
const faults = { kills: 0, sigterms: 0, listenerKills: 0, pgRestarts: 0, botModes: [] };
async function killer() {
  while (!stopping) {
    await sleep(rand(20000, 40000));
    if (stopping) break;
    const inst = pick(upInstances());
    if (!inst) continue;
    say(`kill -9 instance ${inst.i}`);
    faults.kills += 1;
    await restart(inst, 'SIGKILL', rand(1000, 3000));
    say(`instance ${inst.i} back`);
  }
}
async function listenerKiller() {
  while (!stopping) {
    await sleep(15000);
    if (stopping) break;
    try {
      const n = psql("SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = 'stockroom-events' AND datname = current_database()");
      faults.listenerKills += Number(n);
    } catch {}
  }
}
async function botFaults() {
  const cycle = ['ok', '429', 'ok', '500', 'ok', 'hang'];
  for (let i = 0; !stopping; i++) {
    botMode = cycle[i % cycle.length];
    botModesSeen.add(botMode);
    faults.botModes.push(botMode);
    await sleep(6000);
  }
}
async function oneTimeFaults() {
  // SIGTERM the instance that just received an upload, a third of the way in.
  await sleep((SECONDS * 1000) / 3);
  if (stopping) return;
  const inst = await upload(3000);
  await sleep(300);
  if (inst.up) {
    say(`SIGTERM instance ${inst.i} during an upload`);
    faults.sigterms += 1;
    await restart(inst, 'SIGTERM', 1000);
  }
  // One PostgreSQL restart, two thirds of the way in.
  await sleep((SECONDS * 1000) / 3 - 300);
  if (stopping || !PG_RESTART) return;
  say('restarting PostgreSQL');
  const window = [Date.now(), Infinity];
  allWindows.push(window);
  execFileSync('bash', ['-c', PG_RESTART], { stdio: 'ignore' });
  faults.pgRestarts += 1;
  window[1] = Date.now() + GRACE_MS;
  say('PostgreSQL back');
}

// ---- memory --------------------------------------------------------------------
const rss = setInterval(() => {
  for (const inst of instances) {
    if (!inst.up || !inst.proc) continue;
    try {
      const kb = Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${inst.proc.pid}/status`, 'utf8'))[1]);
      inst.rssLastKb = kb;
      inst.rssMaxKb = Math.max(inst.rssMaxKb, kb);
    } catch {}
  }
}, 2000);

// ---- the run -------------------------------------------------------------------
const tasks = [
  ...Array.from({ length: WRITERS }, writer),
  uploader(),
  alerter(),
  loginLoad(),
  killer(),
  listenerKiller(),
  botFaults(),
  oneTimeFaults(),
];
await sleep(SECONDS * 1000);
stopping = true;
say('load and faults stop; settling');
botMode = 'ok';
for (const res of hung.splice(0)) res.destroy();
await Promise.allSettled(tasks);
for (const inst of instances) if (!inst.up) await startInstance(inst);

const pending = (sql) => Number(psql(sql));
const settle = async (what, sql, seconds) => {
  const deadline = Date.now() + seconds * 1000;
  while (pending(sql) > 0 && Date.now() < deadline) await sleep(500);
  return pending(sql);
};
await settle('uploads', "SELECT COUNT(*) FROM upload_jobs WHERE status IN ('QUEUED', 'PROCESSING')", 120);
await settle('alerts', "SELECT COUNT(*) FROM alerts WHERE status IN ('PENDING', 'SENDING')", 120);
// Subscribers catch up to each product's last movement.
const lastVersion = new Map(
  psql('SELECT product_id, MAX(product_version) FROM stock_movements GROUP BY product_id')
    .split('\n')
    .map((l) => l.split('|'))
    .map(([id, v]) => [id, Number(v)]),
);
const caughtUpBy = Date.now() + 60_000;
while (Date.now() < caughtUpBy && subscribers.some((s) => (s.cursors.at(-1) ?? s.startAfter) < lastVersion.get(s.product))) {
  await sleep(250);
}
clearInterval(rss);
clearInterval(renew);

// ---- checks --------------------------------------------------------------------
let passed = 0;
let failed = 0;
function check(name, ok, detail = '') {
  console.log(`${ok ? 'ok  ' : 'FAIL'} ${name}${detail ? `: ${detail}` : ''}`);
  ok ? passed++ : failed++;
}

let ledger = '';
try {
  ledger = execFileSync(BIN, ['verify-ledger'], { env: { ...serverEnv }, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  check('verify-ledger is clean', true, ledger.trim().split('\n').at(-1));
} catch (err) {
  check('verify-ledger is clean', false, `${err.stdout ?? ''}${err.stderr ?? ''}`.trim());
}

const counts = new Map(
  psql("SELECT idempotency_key, COUNT(*) FROM stock_movements WHERE idempotency_key LIKE 'chaos-%' GROUP BY 1")
    .split('\n')
    .filter(Boolean)
    .map((l) => l.split('|'))
    .map(([k, n]) => [k, Number(n)]),
);
const missing = [...acked.keys()].filter((k) => !counts.has(k));
const twice = [...counts].filter(([, n]) => n > 1);
check('every acknowledged movement exists', missing.length === 0, `${acked.size} acknowledged, ${missing.length} missing`);
check(
  'no key applied twice',
  twice.length === 0,
  `${retriedKeys.size} keys retried, ${twice.length} applied more than once`,
);

const alertRows = psql("SELECT status, COUNT(*), COUNT(*) FILTER (WHERE last_error IS NULL) FROM alerts GROUP BY 1")
  .split('\n')
  .filter(Boolean)
  .map((l) => l.split('|'));
const byStatus = Object.fromEntries(alertRows.map(([s, n]) => [s, Number(n)]));
const deadWithoutReason = alertRows.filter(([s, , noReason]) => s === 'DEAD' && Number(noReason) > 0).length;
const stuck = pending("SELECT COUNT(*) FROM alerts WHERE status = 'SENDING' AND lease_until < now()");
const unfinished = pending("SELECT COUNT(*) FROM alerts WHERE status NOT IN ('SENT', 'DEAD')");
const duplicates = [...delivered].filter(([text, n]) => text.includes('chaos alert') && n > 1).length;
check(
  'every alert SENT or DEAD with a reason, none stuck in SENDING',
  unfinished === 0 && deadWithoutReason === 0 && stuck === 0,
  `${JSON.stringify(byStatus)}; ${duplicates} delivered more than once (Bot API hung after receiving)`,
);

const jobs = psql('SELECT id, status, succeeded_rows, failed_rows FROM upload_jobs')
  .split('\n')
  .filter(Boolean)
  .map((l) => l.split('|'));
const notEnded = jobs.filter(([, status]) => !['COMPLETED', 'FAILED', 'CANCELLED'].includes(status));
const refs = new Map(
  psql("SELECT reference, COUNT(*) FROM stock_movements WHERE reference LIKE 'chaos-up%' GROUP BY 1")
    .split('\n')
    .filter(Boolean)
    .map((l) => l.split('|'))
    .map(([r, n]) => [r, Number(n)]),
);
let rowsMissing = 0;
let rowsTwice = 0;
for (const u of uploads) {
  for (let r = 0; r < u.rows; r++) {
    const n = refs.get(`${u.tag}-r${r}`) ?? 0;
    if (n === 0) rowsMissing++;
    if (n > 1) rowsTwice++;
  }
}
check(
  'every upload ended, each row applied once',
  notEnded.length === 0 && rowsMissing === 0 && rowsTwice === 0 && jobs.length === uploads.length,
  `${uploads.length} uploads (${jobs.length} jobs), ${notEnded.length} not ended, ${rowsMissing} rows missing, ${rowsTwice} applied twice`,
);

const versions = new Map();
for (const line of psql('SELECT product_id, product_version FROM stock_movements ORDER BY product_id, product_version').split('\n')) {
  const [id, v] = line.split('|');
  if (!versions.has(id)) versions.set(id, []);
  versions.get(id).push(Number(v));
}
let badStreams = 0;
let events = 0;
const streamErrors = new Map();
for (const s of subscribers) {
  const expected = (versions.get(s.product) ?? []).filter((v) => v > s.startAfter);
  events += s.cursors.length;
  if (JSON.stringify(expected) !== JSON.stringify(s.cursors)) {
    badStreams++;
    const got = new Set(s.cursors);
    const want = new Set(expected);
    const missed = expected.filter((v) => !got.has(v));
    const extra = s.cursors.filter((v) => !want.has(v));
    const dup = s.cursors.length - got.size;
    const disorder = s.cursors.findIndex((v, i) => i > 0 && v <= s.cursors[i - 1]);
    say(
      `stream of ${s.product} after ${s.startAfter}: expected ${expected.length}, got ${s.cursors.length}; ` +
        `${missed.length} missed (first ${missed.slice(0, 5)}), ${extra.length} unexpected, ${dup} duplicates, ` +
        `first out of order at ${disorder} (${s.cursors.slice(Math.max(0, disorder - 3), disorder + 3)})`,
    );
  }
  for (const e of s.errors) streamErrors.set(e, (streamErrors.get(e) ?? 0) + 1);
  s.client.dispose();
}
check(
  'every subscriber saw each movement of its product once, in order',
  badStreams === 0,
  `${subscribers.length} subscribers, ${events} events, ${subscribers.reduce((a, s) => a + s.connections, 0)} connections, ${badStreams} streams wrong; errors before resuming: ${JSON.stringify(Object.fromEntries(streamErrors))}`,
);

check(
  'no 5xx outside a restart window',
  figures.fiveXxOutside.length === 0,
  `${figures.fiveXx} 5xx in all; outside: ${figures.fiveXxOutside.slice(0, 5).join('; ')}`,
);

const rssLimitKb = 300 * 1024;
const memory = instances.map((x) => `instance ${x.i}: max ${(x.rssMaxKb / 1024).toFixed(0)} MB, last ${(x.rssLastKb / 1024).toFixed(0)} MB`);
check('memory stayed bounded (under 300 MB)', instances.every((x) => x.rssMaxKb < rssLimitKb), memory.join('; '));

console.log(
  `figures: ${since()} s; ${figures.requests} requests (${figures.networkErrors} network errors); ` +
    `${acked.size} movements acknowledged, worst ${figures.worstAckMs} ms from first try to acknowledgement; ` +
    `${uploads.length} uploads; logins ${logins.ok} ok, ${logins.refused} refused; ` +
    `faults: ${faults.kills} kill -9, ${faults.sigterms} SIGTERM during an upload, ${faults.pgRestarts} PostgreSQL restarts, ` +
    `${faults.listenerKills} listener connections killed, Bot API modes ${[...botModesSeen].join('/')} (${faults.botModes.length} turns); ` +
    `alert duplicates ${duplicates}`,
);
console.log(`${passed} passed, ${failed} failed`);
for (const inst of instances) if (inst.up) await stopInstance(inst, 'SIGTERM');
bot.close();
process.exit(failed ? 1 : 0);
