// The graphql-ws client from npm resuming a stream with its last cursor:
//
//   node resume.mjs <http url> <ws url> <token> <product id> <movements> <cuts>
//
// A writer records <movements> OUTBOUND movements of 1 on the product over
// HTTP. Two readers subscribe with graphql-ws, retrying forever: one to
// stockChanged(productId:, after:), one to the stream of all products
// (stockChanged(after:)); after every event each keeps the event's cursor in
// the subscription's variables, which graphql-ws sends again when it
// resubscribes. Each reader's socket is cut (terminated, as a network
// failure would) <cuts> times while the movements flow. At the end each
// must have seen every movement exactly once, in order.
//
// Prints one line per check, then `N passed, M failed`; exit 1 on any failure.

import { createClient } from 'graphql-ws';
import WebSocket from 'ws';

/** Past this, the script gives up as a whole (the Rust test allows 60 s). */
const WATCHDOG_MS = 50_000;

const [httpUrl, wsUrl, token, productId, movementsArg, cutsArg] = process.argv.slice(2);
const MOVEMENTS = Number(movementsArg);
const CUTS = Number(cutsArg);
if (!httpUrl || !wsUrl || !token || !productId || !(MOVEMENTS > 0) || !(CUTS >= 0)) {
  console.error('usage: node resume.mjs <http url> <ws url> <token> <product id> <movements> <cuts>');
  process.exit(2);
}
const authorization = `Bearer ${token}`;
setTimeout(() => {
  console.log('FAIL watchdog: the script did not finish in time');
  console.log('0 passed, 1 failed');
  process.exit(1);
}, WATCHDOG_MS).unref();

async function gql(query, variables) {
  const response = await fetch(httpUrl, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization },
    body: JSON.stringify({ query, variables }),
  });
  const body = await response.json();
  if (body.errors) throw new Error(JSON.stringify(body.errors));
  return body.data;
}

// The pattern of the README: query, then subscribe after the answer's version.
const { product } = await gql('query ($id: ID!) { product(id: $id) { stock version } }', {
  id: productId,
});
const start = product.stock;

/**
 * A graphql-ws client on one stream, retrying forever. After every event it
 * keeps the event's cursor in the subscription's variables, which
 * graphql-ws sends again when it resubscribes, and it cuts each new
 * connection at its first event while cuts remain.
 */
function reader(name, query, variables) {
  const r = { name, balances: [], errors: [], cuts: 0, connections: 0 };
  let socket;
  let cutSocket;
  r.client = createClient({
    url: wsUrl,
    webSocketImpl: WebSocket,
    connectionParams: { Authorization: authorization },
    retryAttempts: Number.MAX_SAFE_INTEGER,
    retryWait: () => new Promise((resolve) => setTimeout(resolve, 20)),
    shouldRetry: () => true,
    on: {
      connected: (s) => {
        socket = s;
        r.connections += 1;
      },
    },
  });
  const payload = { query, variables };
  r.finished = new Promise((resolve) => {
    r.client.subscribe(payload, {
      next: (event) => {
        if (event.errors) {
          r.errors.push(event.errors);
          return;
        }
        const { cursor, movement, product: moved } = event.data.stockChanged;
        payload.variables.after = cursor;
        // The stream of all products carries every product's movements.
        if (moved.id !== productId) return;
        r.balances.push(movement.balanceAfter);
        if (movement.balanceAfter === start - MOVEMENTS) resolve();
        // Events already read from a cut socket may still arrive.
        else if (r.cuts < CUTS && socket && socket !== cutSocket) {
          r.cuts += 1;
          cutSocket = socket;
          socket.terminate();
        }
      },
      error: (err) => {
        r.errors.push(String(err?.reason ?? err?.message ?? err));
        resolve();
      },
      complete: () => resolve(),
    });
  });
  return r;
}

const SELECTION = '{ cursor product { id } movement { balanceAfter } }';
const readers = [
  // One product's stream, from the version the query answered.
  reader(
    'stockChanged(productId:)',
    `subscription ($p: ID!, $after: String) { stockChanged(productId: $p, after: $after) ${SELECTION} }`,
    { p: productId, after: String(product.version) },
  ),
  // The stream of all products, from now on (no query answers its cursor):
  // the writer starts once the server has opened it.
  reader(
    'stockChanged (all products)',
    `subscription ($after: String) { stockChanged(after: $after) ${SELECTION} }`,
    { after: null },
  ),
];

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const health = `${new URL(httpUrl).origin}/api/v1/health`;
for (;;) {
  const body = await (await fetch(health)).json();
  if ((body.services?.events?.subscriptions ?? 0) >= readers.length) break;
  await sleep(10);
}
for (let i = 0; i < MOVEMENTS; i++) {
  await gql(
    'mutation ($i: StockMovementInput!) { recordStockMovement(input: $i) { id } }',
    { i: { productId, kind: 'OUTBOUND', quantity: 1 } },
  );
  // Every third movement, while cuts remain, the writer lets the readers
  // catch up (cutting on the way), so that the cuts fall all along the stream.
  for (const r of readers) {
    if (i % 3 === 2 && r.cuts < CUTS) {
      while (r.balances.length < i + 1 && r.errors.length === 0) await sleep(2);
    }
  }
}
for (const r of readers) {
  await r.finished;
  await r.client.dispose();
}

let passed = 0;
let failed = 0;
function check(name, ok, detail) {
  console.log(`${ok ? 'ok  ' : 'FAIL'} ${name}${ok ? '' : `: ${detail}`}`);
  ok ? passed++ : failed++;
}
const expected = Array.from({ length: MOVEMENTS }, (_, i) => start - 1 - i);
for (const r of readers) {
  check(`${r.name}: no error reached the subscriber`, r.errors.length === 0, JSON.stringify(r.errors));
  check(
    `${r.name}: every movement once, in order`,
    JSON.stringify(r.balances) === JSON.stringify(expected),
    `saw ${r.balances.length}: ${JSON.stringify(r.balances)}`,
  );
  check(`${r.name}: the connection was cut ${CUTS} times`, r.cuts === CUTS, `cut ${r.cuts} times`);
  check(
    `${r.name}: graphql-ws reconnected after each cut`,
    r.connections === r.cuts + 1,
    `${r.connections} connections`,
  );
}
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
