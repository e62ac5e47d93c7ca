// The GraphQL-over-HTTP server audits of graphql-http, against one endpoint.
//
//   node audit.mjs http://127.0.0.1:PORT/graphql
//
// One line per audit. A MUST or SHOULD audit that is not met fails the run
// (exit 1); a MAY audit that is not met is printed and allowed. An audit that
// cannot complete at all (connection refused or reset, no answer within the
// timeout) fails the run whatever its level: the server is broken, not
// merely choosing an optional behaviour. The last line is `N passed, M failed`
// over the MUST and SHOULD audits (plus any MAY audit that could not complete).
// The whole run is bounded as well (50 s).

import { serverAudits } from 'graphql-http';

const REQUEST_TIMEOUT_MS = 10_000;
const BODY_EXCERPT = 300;

const url = process.argv[2];
if (!url) {
  console.error('usage: node audit.mjs <http url of the GraphQL endpoint>');
  process.exit(2);
}

/** fetch, bounded: no audit waits for an answer longer than the timeout. */
const fetchFn = (input, init = {}) =>
  fetch(input, { ...init, signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS) });

/** MUST, SHOULD or MAY: the audit's name starts with its level. */
const levelOf = (name) => name.split(' ')[0];

/** What the server answered, for a failing audit's line. */
async function describe(response) {
  if (!response) return '';
  const parts = [`status ${response.status}`];
  parts.push(`content-type ${response.headers.get('content-type') ?? '(none)'}`);
  try {
    const body = await response.clone().text();
    const flat = body.replace(/\s+/g, ' ').trim();
    parts.push(
      `body ${flat.length > BODY_EXCERPT ? `${flat.slice(0, BODY_EXCERPT)}...` : flat || '(empty)'}`,
    );
  } catch {
    // The body was read by the audit and cannot be read again.
  }
  return ` [${parts.join('; ')}]`;
}

let passed = 0;
let failed = 0;
let mayOk = 0;
let mayNotMet = 0;

// A server that answers nothing would cost the timeout for every audit; the
// run as a whole is bounded too (the Rust test allows 60 s).
const WATCHDOG_MS = 50_000;
const watchdog = setTimeout(() => {
  console.log(`FAIL the audits did not finish within ${WATCHDOG_MS / 1000} s`);
  console.log(`${passed} passed, ${failed + 1} failed`);
  process.exit(1);
}, WATCHDOG_MS);
watchdog.unref();

// One at a time: each line is the answer to one known request, and the server
// never sees more than one audit request at once.
for (const audit of serverAudits({ url, fetchFn })) {
  const level = levelOf(audit.name);
  const required = level === 'MUST' || level === 'SHOULD';
  const label = `${audit.id} ${audit.name}`;
  let result;
  try {
    result = await audit.fn();
  } catch (err) {
    // graphql-http throws only when the audit could not be carried out.
    const cause = err?.cause ? ` (${err.cause.code ?? err.cause.message ?? err.cause})` : '';
    console.log(`FAIL ${label} -- could not complete: ${err?.name ?? 'Error'}: ${err?.message ?? err}${cause}`);
    failed += 1;
    continue;
  }
  if (result.status === 'ok') {
    console.log(`ok   ${label}`);
    if (required) passed += 1;
    else mayOk += 1;
  } else if (required) {
    console.log(`FAIL ${label} -- ${result.reason}${await describe(result.response)}`);
    failed += 1;
  } else {
    console.log(`FAIL (MAY, allowed) ${label} -- ${result.reason}${await describe(result.response)}`);
    mayNotMet += 1;
  }
}

console.log(`MAY audits: ${mayOk} met, ${mayNotMet} not met (allowed)`);
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed === 0 ? 0 : 1);
