// Real GraphQL clients from npm, each with its default settings (only the
// URL and the bearer token given), reading one product by SKU:
//
//   node clients.mjs <http url> <ws url> <token> <sku>
//
// (a) @urql/core with its fetchExchange;
// (b) @apollo/client with an HttpLink, then with the automatic persisted
//     queries link in front of it (hashed queries over GET): a first run that
//     registers the query, a second one answered from the hash alone;
// (c) graphql-ws over a WebSocket (a query, not a subscription).
//
// One line per check, then `N passed, M failed`; exit 1 on any failure.
// Every request is bounded by a timeout, and every client is closed at the
// end, so the script cannot hang.

import { createHash } from 'node:crypto';

import { ApolloClient, HttpLink, InMemoryCache, gql } from '@apollo/client';
import { createPersistedQueryLink } from '@apollo/client/link/persisted-queries';
import { createClient as createUrqlClient, fetchExchange } from '@urql/core';
import { createClient as createWsClient } from 'graphql-ws';
import WebSocket from 'ws';

const STEP_TIMEOUT_MS = 10_000;
/** Past this, the script gives up as a whole (the Rust test allows 60 s). */
const WATCHDOG_MS = 50_000;

const [httpUrl, wsUrl, token, sku] = process.argv.slice(2);
if (!httpUrl || !wsUrl || !token || !sku) {
  console.error('usage: node clients.mjs <http url> <ws url> <token> <sku>');
  process.exit(2);
}
const authorization = `Bearer ${token}`;

const QUERY = 'query ($sku: String!) { productBySku(sku: $sku) { id sku stock } }';


// Every HTTP request the clients make, as they made it: the clients call the
// global fetch at request time, so watching it changes none of their settings.
const requests = [];
const realFetch = globalThis.fetch;
globalThis.fetch = async (input, init = {}) => {
  const target = new URL(typeof input === 'string' ? input : input.url ?? String(input));
  const headers = new Headers(init.headers ?? (typeof input === 'object' ? input.headers : undefined));
  const entry = {
    method: (init.method ?? 'GET').toUpperCase(),
    params: [...target.searchParams.keys()],
    hasQuery:
      target.searchParams.has('query') ||
      (typeof init.body === 'string' && jsonHasQuery(init.body)),
    accept: headers.get('accept'),
    contentType: headers.get('content-type'),
    status: undefined,
    responseType: undefined,
  };
  requests.push(entry);
  const response = await realFetch(input, init);
  entry.status = response.status;
  entry.responseType = response.headers.get('content-type');
  return response;
};

function jsonHasQuery(body) {
  try {
    return typeof JSON.parse(body).query === 'string';
  } catch {
    return false;
  }
}

const show = (r) =>
  `${r.method}${r.params.length ? ` ?${r.params.join('&')}` : ''}${r.hasQuery ? '' : ' (no query text)'}` +
  ` accept=${r.accept ?? '(none)'} -> ${r.status ?? 'no answer'} ${r.responseType ?? ''}`.trimEnd();

/** The requests made while `run` ran, printed under the check. */
async function watched(run) {
  const from = requests.length;
  try {
    return { value: await run(), sent: requests.slice(from) };
  } finally {
    for (const r of requests.slice(from)) console.log(`       ${show(r)}`);
  }
}

function withTimeout(promise, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(
      () => reject(new Error(`${what}: no answer within ${STEP_TIMEOUT_MS / 1000} s`)),
      STEP_TIMEOUT_MS,
    );
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** A readable account of whatever a client failed with. */
function explain(err) {
  if (err === undefined || err === null) return String(err);
  if (Array.isArray(err)) return err.map(explain).join('; ');
  // graphql-ws reports a closed socket with its CloseEvent.
  if (typeof err === 'object' && 'code' in err && 'reason' in err && !(err instanceof Error)) {
    return `socket closed with ${err.code} ${err.reason || '(no reason)'}`;
  }
  if (err instanceof Error) {
    const extra = [];
    if (err.graphQLErrors?.length) extra.push(`graphQLErrors=${JSON.stringify(err.graphQLErrors)}`);
    if (err.errors?.length) extra.push(`errors=${JSON.stringify(err.errors)}`);
    if (err.networkError) extra.push(`networkError=${explain(err.networkError)}`);
    if (err.statusCode) extra.push(`status=${err.statusCode}`);
    if (err.bodyText) extra.push(`body=${err.bodyText.slice(0, 300)}`);
    if (err.cause) extra.push(`cause=${err.cause.code ?? err.cause.message ?? err.cause}`);
    return `${err.name}: ${err.message}${extra.length ? ` (${extra.join(', ')})` : ''}`;
  }
  if (typeof err === 'object') {
    // A GraphQL error as JSON; an event (the socket's ErrorEvent) by its message.
    const kind = err.constructor?.name ?? 'Object';
    if (kind === 'Object') return JSON.stringify(err);
    return `${kind}: ${err.message || err.type || JSON.stringify(err)}`;
  }
  return String(err);
}

/** The product of an answer's data, checked against the SKU asked for. */
function checkProduct(data) {
  const product = data?.productBySku;
  if (!product) throw new Error(`no product in the answer: ${JSON.stringify(data)}`);
  if (product.sku !== sku) throw new Error(`asked for ${sku}, got ${JSON.stringify(product)}`);
  if (typeof product.id !== 'string' || !Number.isInteger(product.stock)) {
    throw new Error(`unexpected product shape: ${JSON.stringify(product)}`);
  }
  return product;
}

let passed = 0;
let failed = 0;

const watchdog = setTimeout(() => {
  console.log(`FAIL the script did not finish within ${WATCHDOG_MS / 1000} s`);
  console.log(`${passed} passed, ${failed + 1} failed`);
  process.exit(1);
}, WATCHDOG_MS);
watchdog.unref();

async function check(name, run) {
  try {
    const detail = await run();
    console.log(`ok   ${name}${detail ? ` -- ${detail}` : ''}`);
    passed += 1;
  } catch (err) {
    console.log(`FAIL ${name} -- ${explain(err)}`);
    failed += 1;
  }
}

// (a) urql: createClient with the fetchExchange, the token as a header.
const urql = createUrqlClient({
  url: httpUrl,
  exchanges: [fetchExchange],
  fetchOptions: { headers: { authorization } },
});
await check('urql (@urql/core fetchExchange, default settings) reads the product', async () => {
  const { value: result } = await watched(() =>
    withTimeout(urql.query(QUERY, { sku }).toPromise(), 'urql query'),
  );
  if (result.error) throw result.error;
  const product = checkProduct(result.data);
  return `id ${product.id}, stock ${product.stock}`;
});

// (b) Apollo Client: an HttpLink with its defaults and the token.
const sha256 = (text) => createHash('sha256').update(text).digest('hex');
const headers = { authorization };
const apollo = new ApolloClient({
  link: new HttpLink({ uri: httpUrl, headers }),
  cache: new InMemoryCache(),
});
const apq = new ApolloClient({
  link: createPersistedQueryLink({ sha256, useGETForHashedQueries: true }).concat(
    new HttpLink({ uri: httpUrl, headers }),
  ),
  cache: new InMemoryCache(),
});
const document = gql(QUERY);
// A text no client has sent yet: the server keeps every document it parsed
// by its hash, so the first hash-only GET of QUERY would already be known.
const apqDocument = gql(
  'query PersistedProduct($sku: String!) { productBySku(sku: $sku) { id sku stock } }',
);

await check('Apollo Client (HttpLink, default settings) reads the product', async () => {
  const { value: result } = await watched(() =>
    withTimeout(apollo.query({ query: document, variables: { sku } }), 'Apollo query'),
  );
  if (result.error) throw result.error;
  const product = checkProduct(result.data);
  return `id ${product.id}, stock ${product.stock}`;
});

await check(
  'Apollo Client, persisted queries: an unknown hash is refused, then the query is registered',
  async () => {
    const { value: result, sent } = await watched(() =>
      withTimeout(apq.query({ query: apqDocument, variables: { sku } }), 'Apollo APQ query'),
    );
    if (result.error) throw result.error;
    checkProduct(result.data);
    // The link sends the hash alone (GET), is told PersistedQueryNotFound,
    // and sends the query with its hash (POST).
    const shape = sent.map((r) => `${r.method}${r.hasQuery ? '+query' : ''}`).join(', ');
    if (shape !== 'GET, POST+query') {
      throw new Error(`expected a hash-only GET then a POST with the query, sent: ${shape}`);
    }
    return 'hash-only GET, then POST with the query';
  },
);

await check(
  'Apollo Client, persisted queries: a known hash is answered from the hash alone (GET)',
  async () => {
    const { value: result, sent } = await watched(() =>
      withTimeout(
        apq.query({ query: apqDocument, variables: { sku }, fetchPolicy: 'network-only' }),
        'Apollo APQ query by hash',
      ),
    );
    if (result.error) throw result.error;
    const product = checkProduct(result.data);
    const shape = sent.map((r) => `${r.method}${r.hasQuery ? '+query' : ''}`).join(', ');
    if (shape !== 'GET') {
      throw new Error(`expected one hash-only GET, sent: ${shape || 'nothing'}`);
    }
    return `id ${product.id}, stock ${product.stock}`;
  },
);

// (c) graphql-ws: the token in connection_init's payload.
const socket = createWsClient({
  url: wsUrl,
  webSocketImpl: WebSocket,
  connectionParams: { Authorization: authorization },
});
let closedWith;
socket.on('closed', (event) => {
  closedWith = event;
});
await check('graphql-ws (graphql-transport-ws, default settings) reads the product', async () => {
  const answer = new Promise((resolve, reject) => {
    let last;
    socket.subscribe(
      { query: QUERY, variables: { sku } },
      {
        next: (value) => {
          last = value;
        },
        error: reject,
        complete: () => resolve(last),
      },
    );
  });
  let result;
  try {
    result = await withTimeout(answer, 'graphql-ws query');
  } catch (err) {
    if (closedWith && err instanceof Error) {
      err.message += ` (last close: ${closedWith.code} ${closedWith.reason || ''})`;
    }
    throw err;
  }
  if (!result) throw new Error('the operation completed without a result');
  if (result.errors?.length) throw new Error(`errors: ${JSON.stringify(result.errors)}`);
  const product = checkProduct(result.data);
  return `id ${product.id}, stock ${product.stock}`;
});

// Close everything, bounded too.
await Promise.race([
  Promise.allSettled([
    Promise.resolve().then(() => apollo.stop()),
    Promise.resolve().then(() => apq.stop()),
    Promise.resolve().then(() => socket.dispose()),
  ]),
  new Promise((resolve) => setTimeout(resolve, 2_000).unref()),
]);

console.log(`${passed} passed, ${failed} failed`);
process.exit(failed === 0 ? 0 : 1);
