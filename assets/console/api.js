// The console's one GraphQL client: queries and mutations over HTTP
// (POST /graphql, multipart for files), subscriptions over graphql-ws
// (/graphql/ws), the session in sessionStorage only, and the access token
// refreshed before it expires. Every page talks to the server through here.

const KEY = 'stockroom.console.session';
const REFRESH_MARGIN_MS = 60_000;

let session = read();
let refreshTimer = null;
let refreshing = null;
let socket = null;
const listeners = new Set();
/** The live subscriptions, to move to a new socket. */
const active = new Set();

function read() {
  try {
    return JSON.parse(sessionStorage.getItem(KEY) || 'null');
  } catch {
    return null;
  }
}

/** An answer's first error: its `extensions.code`, message and all errors. */
export class ApiError extends Error {
  constructor(code, message, errors = []) {
    super(message);
    this.code = code;
    this.errors = errors;
  }
}

export function currentSession() {
  return session;
}

/** Calls `fn(session)` on every sign-in, refresh and sign-out. */
export function onSession(fn) {
  listeners.add(fn);
  return () => listeners.delete(fn);
}

function setSession(next) {
  const tokenChanged = (session && session.accessToken) !== (next && next.accessToken);
  if (!next) currencyCode = null;
  session = next;
  if (next) sessionStorage.setItem(KEY, JSON.stringify(next));
  else sessionStorage.removeItem(KEY);
  scheduleRefresh();
  // A socket carries the token it connected with: a new token gets a new
  // socket, and the live streams move over to it (resuming where they have
  // a cursor) before the old one closes.
  if (tokenChanged && socket) {
    const old = socket;
    socket = null;
    if (next) active.forEach(attach);
    else active.clear();
    old.dispose();
  }
  listeners.forEach((fn) => fn(next));
}

function fromPayload(payload) {
  return {
    accessToken: payload.accessToken,
    accessTokenExpiresAt: payload.accessTokenExpiresAt,
    refreshToken: payload.refreshToken,
    user: payload.user,
    passwordChangeRequired: payload.passwordChangeRequired,
    twoFactorEnrollmentRequired: payload.twoFactorEnrollmentRequired,
  };
}

const USER = 'id email displayName role isActive twoFactorEnabled passwordChangedAt lastLoginAt lockedUntil createdAt';
const AUTH = `accessToken accessTokenExpiresAt refreshToken passwordChangeRequired twoFactorEnrollmentRequired user { ${USER} }`;

/** Milliseconds until the token should be refreshed: when a fifth of what
 * is left remains, at most a minute before it expires. */
function refreshDueIn(s) {
  const left = Date.parse(s.accessTokenExpiresAt) - Date.now();
  return left - Math.min(REFRESH_MARGIN_MS, left / 5);
}

function scheduleRefresh() {
  clearTimeout(refreshTimer);
  if (!session) return;
  refreshTimer = setTimeout(() => refresh().catch(() => {}), Math.max(refreshDueIn(session), 0));
}

/** Trades the refresh token for a new pair; a refusal signs out. */
export function refresh() {
  if (!session) return Promise.resolve(null);
  if (!refreshing) {
    const token = session.refreshToken;
    refreshing = post(
      { query: `mutation ($t: String!) { refreshToken(refreshToken: $t) { ${AUTH} } }`, variables: { t: token } },
      false,
    )
      .then((data) => {
        setSession(fromPayload(data.refreshToken));
        return session;
      })
      .catch((error) => {
        if (error.code !== 'NETWORK') setSession(null);
        throw error;
      })
      .finally(() => {
        refreshing = null;
      });
  }
  return refreshing;
}

async function post(body, withToken = true, files = null) {
  const headers = { accept: 'application/graphql-response+json, application/json' };
  if (withToken && session) headers.authorization = `Bearer ${session.accessToken}`;
  let payload;
  if (files) {
    // The GraphQL multipart request: operations, a map, then the files.
    payload = new FormData();
    payload.append('operations', JSON.stringify(body));
    const map = {};
    Object.keys(files).forEach((name, i) => {
      map[i] = [`variables.${name}`];
    });
    payload.append('map', JSON.stringify(map));
    Object.values(files).forEach((file, i) => payload.append(String(i), file, file.name));
  } else {
    headers['content-type'] = 'application/json';
    payload = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch('/graphql', { method: 'POST', headers, body: payload });
  } catch (error) {
    throw new ApiError('NETWORK', String(error));
  }
  let json;
  try {
    json = await response.json();
  } catch {
    throw new ApiError('NETWORK', `HTTP ${response.status}`);
  }
  if (json.errors && json.errors.length) {
    const first = json.errors[0];
    throw new ApiError((first.extensions && first.extensions.code) || 'INTERNAL', first.message, json.errors);
  }
  return json.data;
}

/**
 * Runs a query or mutation. `files` maps variable names to File objects
 * (sent as a multipart request). An expired token is refreshed once.
 */
export async function gql(query, variables = {}, files = null) {
  if (refreshing) await refreshing.catch(() => {});
  try {
    return await post({ query, variables }, true, files);
  } catch (error) {
    if (error.code === 'UNAUTHENTICATED' && session) {
      await refresh();
      return post({ query, variables }, true, files);
    }
    // The account must do something first: the gate shows it.
    if (session && (error.code === 'PASSWORD_CHANGE_REQUIRED' || error.code === 'TWO_FACTOR_ENROLLMENT_REQUIRED')) {
      setSession({
        ...session,
        passwordChangeRequired: error.code === 'PASSWORD_CHANGE_REQUIRED',
        twoFactorEnrollmentRequired: error.code === 'TWO_FACTOR_ENROLLMENT_REQUIRED',
      });
    }
    throw error;
  }
}

export async function signIn(email, password, otp) {
  const data = await post(
    {
      query: `mutation ($input: LoginInput!) { login(input: $input) { ${AUTH} } }`,
      variables: { input: { email, password, otp: otp || null } },
    },
    false,
  );
  setSession(fromPayload(data.login));
  return session;
}

export async function signOut() {
  const token = session && session.refreshToken;
  if (token) {
    await post({ query: 'mutation ($t: String!) { logout(refreshToken: $t) }', variables: { t: token } }).catch(() => {});
  }
  setSession(null);
}

const NOTICE = 'stockroom.console.notice';

/**
 * Changes the password. The server then revokes every session, this one
 * too: the tab signs out and the sign-in form says why.
 */
export async function changePassword(current, next) {
  await gql('mutation ($c: String!, $n: String!) { changePassword(currentPassword: $c, newPassword: $n) }', { c: current, n: next });
  sessionStorage.setItem(NOTICE, 'password.changed');
  setSession(null);
}

/** The catalogue key of a notice left for the sign-in form, once. */
export function takeNotice() {
  const key = sessionStorage.getItem(NOTICE);
  sessionStorage.removeItem(NOTICE);
  return key;
}

/** Reads `me` again, e.g. after a password change or enrollment. */
export async function reloadUser(flags = {}) {
  const data = await gql(`{ me { ${USER} } }`);
  setSession({ ...session, ...flags, user: data.me });
}

export const USER_FIELDS = USER;

let currencyCode = null;

/** The currency unit costs are kept in (read once per sign-in). */
export function currency() {
  if (!currencyCode) currencyCode = gql('{ currency }').then((d) => d.currency, (e) => { currencyCode = null; throw e; });
  return currencyCode;
}

function client() {
  if (!socket) {
    const url = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/graphql/ws`;
    socket = window.graphqlWs.createClient({
      url,
      lazy: true,
      retryAttempts: Infinity,
      shouldRetry: () => true,
      retryWait: (n) => new Promise((r) => setTimeout(r, Math.min(250 * 2 ** n, 5000))),
      connectionParams: async () => {
        if (session && refreshDueIn(session) <= 0) {
          await refresh().catch(() => {});
        }
        return session ? { Authorization: `Bearer ${session.accessToken}` } : {};
      },
    });
  }
  return socket;
}

/**
 * A live subscription. `onData(data, variables)` gets every event; where
 * the stream takes a cursor, `cursorOf(data)` reads it from an event and
 * the stream resumes after it when the socket reconnects (graphql-ws sends
 * the same payload again, so the cursor is kept in its variables). Returns
 * the function that ends it.
 */
export function live(query, variables, onData, { cursorOf, onError } = {}) {
  const payload = { query, variables: { ...variables } };
  const sub = { payload, sink: null, stop: () => {} };
  sub.sink = {
    next: (result) => {
      if (result.errors && result.errors.length) {
        const first = result.errors[0];
        if (onError) onError(new ApiError((first.extensions && first.extensions.code) || 'INTERNAL', first.message));
        return;
      }
      if (cursorOf) {
        const cursor = cursorOf(result.data);
        if (cursor) payload.variables.after = cursor;
      }
      onData(result.data);
    },
    error: (error) => onError && onError(new ApiError('NETWORK', String((error && error.reason) || error))),
    complete: () => {},
  };
  active.add(sub);
  attach(sub);
  return () => {
    active.delete(sub);
    sub.stop();
  };
}

function attach(sub) {
  sub.stop = client().subscribe(sub.payload, sub.sink);
}

scheduleRefresh();
