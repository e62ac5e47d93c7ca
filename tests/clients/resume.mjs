// The graphql-ws client from npm resuming a stream with its last cursor:
//
//   node resume.mjs <http url> <ws url> <token> <product id> <movements> <cuts>
//
// A writer records <movements> OUTBOUND movements of 1 on the product over
// HTTP. A reader subscribes to stockChanged(productId:, after:) with
// graphql-ws, retrying forever; after every event it keeps the event's
// cursor in the subscription's variables, which graphql-ws sends again when
// it resubscribes. The reader's socket is cut (terminated, as a network
// failure would) <cuts> times while the movements flow. At the end every
// movement must have been seen exactly once, in order.
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

let socket;
let cutSocket;
let connections = 0;
const client = createClient({
  url: wsUrl,
  webSocketImpl: WebSocket,
  connectionParams: { Authorization: authorization },
  retryAttempts: Number.MAX_SAFE_INTEGER,
  retryWait: () => new Promise((resolve) => setTimeout(resolve, 20)),
  shouldRetry: () => true,
  on: {
    connected: (s) => {
      socket = s;
      connections += 1;
    },
  },
});

const payload = {
  query:
    'subscription ($p: ID!, $after: String) { stockChanged(productId: $p, after: $after) { cursor movement { balanceAfter } } }',
  variables: { p: productId, after: String(product.version) },
};
const balances = [];
const errors = [];
let cuts = 0;
const finished = new Promise((resolve) => {
  client.subscribe(payload, {
    next: (event) => {
      if (event.errors) {
        errors.push(event.errors);
        return;
      }
      const { cursor, movement } = event.data.stockChanged;
      // What graphql-ws sends when it subscribes again.
      payload.variables.after = cursor;
      balances.push(movement.balanceAfter);
      if (movement.balanceAfter === start - MOVEMENTS) resolve();
      // Cut each new connection at its first event while cuts remain
      // (events already read from a cut socket may still arrive).
      else if (cuts < CUTS && socket && socket !== cutSocket) {
        cuts += 1;
        cutSocket = socket;
        socket.terminate();
      }
    },
    error: (err) => {
      errors.push(String(err?.reason ?? err?.message ?? err));
      resolve();
    },
    complete: () => resolve(),
  });
});

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
for (let i = 0; i < MOVEMENTS; i++) {
  await gql(
    'mutation ($i: StockMovementInput!) { recordStockMovement(input: $i) { id } }',
    { i: { productId, kind: 'OUTBOUND', quantity: 1 } },
  );
  // Every third movement, while cuts remain, the writer lets the reader
  // catch up (cutting on the way), so that the cuts fall all along the stream.
  if (i % 3 === 2 && cuts < CUTS) {
    while (balances.length < i + 1 && errors.length === 0) await sleep(2);
  }
}
await finished;
await client.dispose();

let passed = 0;
let failed = 0;
function check(name, ok, detail) {
  console.log(`${ok ? 'ok  ' : 'FAIL'} ${name}${ok ? '' : `: ${detail}`}`);
  ok ? passed++ : failed++;
}
const expected = Array.from({ length: MOVEMENTS }, (_, i) => start - 1 - i);
check('no error reached the subscriber', errors.length === 0, JSON.stringify(errors));
check(
  'every movement once, in order',
  JSON.stringify(balances) === JSON.stringify(expected),
  `saw ${balances.length}: ${JSON.stringify(balances)}`,
);
check(`the connection was cut ${CUTS} times`, cuts === CUTS, `cut ${cuts} times`);
check('graphql-ws reconnected after each cut', connections === cuts + 1, `${connections} connections`);
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
