/*
 * Stockroom GraphiQL page: a sign-in bar above GraphiQL 3.
 *
 * - Tokens live in memory and in sessionStorage (this tab only); never in
 *   localStorage or cookies. GraphiQL's own state (tabs, history, theme) is
 *   kept in sessionStorage too, through the `storage` prop.
 * - After sign-in the access token is shown in GraphiQL's Headers editor and
 *   added by the fetcher to every request; subscriptions go over
 *   /graphql/ws (graphql-transport-ws) with the token in connection_init.
 * - The access token is refreshed 60 s before it expires (at half its life
 *   when it lives less than two minutes).
 *
 * No eval, no inline scripts: runs under script-src 'self'.
 */
(function () {
  'use strict';

  var ENDPOINT = '/graphql';
  var WS_PATH = '/graphql/ws';
  var SESSION_KEY = 'stockroom:session';
  var GRAPHIQL_PREFIX = 'graphiql:';

  var LOGIN =
    'mutation($i: LoginInput!) { login(input: $i) { accessToken accessTokenExpiresAt refreshToken user { email role } passwordChangeRequired twoFactorEnrollmentRequired } }';
  var REFRESH =
    'mutation($t: String!) { refreshToken(refreshToken: $t) { accessToken accessTokenExpiresAt refreshToken user { email role } } }';
  var LOGOUT = 'mutation($t: String!) { logout(refreshToken: $t) }';

  var DEFAULT_QUERY = [
    '# Welcome to the Stockroom GraphQL API.',
    '#',
    '# Sign in with the bar above: the access token then shows',
    '# in the Headers tab below and is sent with every request',
    '# and subscription. It is refreshed before it expires and',
    '# kept for this browser tab only.',
    '#',
    '# Docs (top left) lists every query, mutation and',
    '# subscription. Run with Ctrl-Enter or the play button.',
    '',
    '{',
    '  me {',
    '    email',
    '    role',
    '  }',
    '}',
    '',
  ].join('\n');

  function $(id) {
    return document.getElementById(id);
  }

  var el = {
    form: $('login-form'),
    email: $('login-email'),
    password: $('login-password'),
    otp: $('login-otp'),
    submit: $('login-submit'),
    status: $('login-status'),
    notice: $('login-notice'),
    logout: $('logout'),
    mount: $('graphiql'),
    qrDialog: $('qr-dialog'),
    qrImage: $('qr-image'),
    qrClose: $('qr-close'),
  };

  // ---------------------------------------------------------------- storage

  var store = (function () {
    try {
      var s = window.sessionStorage;
      var probe = '__stockroom_probe__';
      s.setItem(probe, '1');
      s.removeItem(probe);
      return s;
    } catch (e) {
      return null; // storage disabled: memory only
    }
  })();
  var memory = {};

  function storeGet(key) {
    if (store) return store.getItem(key);
    return Object.prototype.hasOwnProperty.call(memory, key) ? memory[key] : null;
  }
  function storeSet(key, value) {
    if (store) store.setItem(key, value);
    else memory[key] = String(value);
  }
  function storeRemove(key) {
    if (store) store.removeItem(key);
    else delete memory[key];
  }
  function storeKeys() {
    if (!store) return Object.keys(memory);
    var keys = [];
    for (var i = 0; i < store.length; i++) keys.push(store.key(i));
    return keys;
  }
  function storeClearAll() {
    if (store) store.clear();
    memory = {};
  }

  // Stands for "the current access token" in what GraphiQL stores (its
  // query history keeps the headers of every run); the fetcher swaps it for
  // the current token, so a restored history entry still works.
  var TOKEN_PLACEHOLDER = 'STOCKROOM_ACCESS_TOKEN';

  function scrubTokens(value) {
    if (typeof value !== 'string' || value.indexOf('Bearer') === -1) return value;
    Object.keys(issuedTokens).forEach(function (token) {
      value = value.split(token).join(TOKEN_PLACEHOLDER);
    });
    return value;
  }

  // The Storage interface GraphiQL wants (@graphiql/toolkit), backed by
  // sessionStorage instead of GraphiQL's default localStorage, and without
  // access tokens.
  var graphiqlStorage = {
    getItem: storeGet,
    setItem: function (key, value) {
      storeSet(key, scrubTokens(value));
    },
    removeItem: storeRemove,
    clear: function () {
      storeKeys().forEach(function (k) {
        if (k && k.indexOf(GRAPHIQL_PREFIX) === 0) storeRemove(k);
      });
    },
    get length() {
      return storeKeys().filter(function (k) {
        return k && k.indexOf(GRAPHIQL_PREFIX) === 0;
      }).length;
    },
  };

  // ---------------------------------------------------------------- session

  // { accessToken, accessTokenExpiresAt, refreshToken, email, role,
  //   passwordChangeRequired, twoFactorEnrollmentRequired,
  //   issuedAt, expiresAt (both ms, this browser's clock) }
  var session = null;
  var generation = 0; // bumps on every sign-in/out, to drop stale answers
  var refreshTimer = null;
  var issuedTokens = {}; // access tokens this page received (to swap stale ones)

  function saveSession() {
    if (session) storeSet(SESSION_KEY, JSON.stringify(session));
    else storeRemove(SESSION_KEY);
  }

  function loadSession() {
    try {
      var s = JSON.parse(storeGet(SESSION_KEY) || 'null');
      if (s && s.accessToken && s.refreshToken && s.email) return s;
    } catch (e) {
      /* ignore a damaged entry */
    }
    return null;
  }

  function GqlError(message, code) {
    this.name = 'GqlError';
    this.message = message;
    this.code = code || null;
  }
  GqlError.prototype = Object.create(Error.prototype);

  function describe(err) {
    return err.code ? err.message + ' (' + err.code + ')' : err.message;
  }

  // POST one operation; resolves with { data, skew } where skew is the
  // server's clock minus ours (from the Date header), in ms.
  function gql(query, variables, token) {
    var headers = { 'content-type': 'application/json', accept: 'application/json' };
    if (token) headers.authorization = 'Bearer ' + token;
    var sentAt = Date.now();
    return fetch(ENDPOINT, {
      method: 'POST',
      headers: headers,
      body: JSON.stringify({ query: query, variables: variables }),
      cache: 'no-store',
      credentials: 'same-origin',
    }).then(
      function (res) {
        var skew = 0;
        var date = Date.parse(res.headers.get('date') || '');
        if (!isNaN(date)) {
          var local = (sentAt + Date.now()) / 2;
          // Date has a one-second resolution: ignore differences below 2 s.
          if (Math.abs(date - local) > 2000) skew = date - local;
        }
        return res.json().then(
          function (body) {
            var errors = body && body.errors;
            if (errors && errors.length) {
              var e = errors[0] || {};
              throw new GqlError(e.message || 'request failed', e.extensions && e.extensions.code);
            }
            if (!body || !body.data) throw new GqlError('HTTP ' + res.status, 'HTTP_' + res.status);
            return { data: body.data, skew: skew };
          },
          function () {
            throw new GqlError('HTTP ' + res.status + ' ' + res.statusText, 'HTTP_' + res.status);
          }
        );
      },
      function (err) {
        throw new GqlError('network error: ' + (err && err.message ? err.message : err), 'NETWORK');
      }
    );
  }

  function setStatus(text, state) {
    el.status.textContent = text;
    el.status.setAttribute('data-state', state || 'info');
  }

  function renderNotice() {
    var parts = [];
    if (session && session.passwordChangeRequired) parts.push('change your password first (changePassword)');
    if (session && session.twoFactorEnrollmentRequired)
      parts.push('turn on two-factor login first (beginTwoFactorEnrollment, then confirmTwoFactor)');
    el.notice.textContent = parts.length ? '\u2014 ' + parts.join('; ') : '';
    el.notice.hidden = parts.length === 0;
  }

  function renderBar() {
    var signedIn = !!session;
    el.form.hidden = signedIn;
    el.logout.hidden = !signedIn;
    if (signedIn) setStatus('Signed in as ' + session.email + ' (' + session.role + ')', 'ok');
    renderNotice();
  }

  function showOtp(show) {
    el.otp.hidden = !show;
    if (!show) el.otp.value = '';
  }

  // Accepts a login or refreshToken payload.
  function applyAuth(payload, skew, previous) {
    var now = Date.now();
    var expiresAt = Date.parse(payload.accessTokenExpiresAt) - (skew || 0);
    if (isNaN(expiresAt)) expiresAt = now + 5 * 60 * 1000;
    var sameUser = previous && previous.email === payload.user.email;
    session = {
      accessToken: payload.accessToken,
      accessTokenExpiresAt: payload.accessTokenExpiresAt,
      refreshToken: payload.refreshToken,
      email: payload.user.email,
      role: payload.user.role,
      passwordChangeRequired:
        'passwordChangeRequired' in payload
          ? !!payload.passwordChangeRequired
          : !!(sameUser && previous.passwordChangeRequired),
      twoFactorEnrollmentRequired:
        'twoFactorEnrollmentRequired' in payload
          ? !!payload.twoFactorEnrollmentRequired
          : !!(sameUser && previous.twoFactorEnrollmentRequired),
      issuedAt: now,
      expiresAt: expiresAt,
    };
    issuedTokens[session.accessToken] = true;
    saveSession();
    scheduleRefresh();
    // New subscriptions must use the new token: same user, let running
    // subscriptions finish on the old socket; another user, close them now.
    retireWsClient(!sameUser);
    renderBar();
    renderGraphiQL();
  }

  function clearSession(statusText, state) {
    generation++;
    clearTimeout(refreshTimer);
    refreshTimer = null;
    session = null;
    retireWsClient(true);
    storeClearAll();
    renderBar();
    setStatus(statusText || 'Not signed in', state || 'info');
    renderGraphiQL();
  }

  function refreshDueAt(s) {
    var ttl = s.expiresAt - s.issuedAt;
    return ttl >= 120 * 1000 ? s.expiresAt - 60 * 1000 : s.issuedAt + ttl / 2;
  }

  function scheduleRefresh() {
    clearTimeout(refreshTimer);
    refreshTimer = null;
    if (!session) return;
    var delay = Math.max(0, Math.min(refreshDueAt(session) - Date.now(), 0x7fffffff));
    refreshTimer = setTimeout(refresh, delay);
  }

  var refreshing = false;
  function refresh() {
    if (!session || refreshing) return;
    refreshing = true;
    var gen = generation;
    var previous = session;
    // The refresh token is the credential (the access token may have expired).
    gql(REFRESH, { t: previous.refreshToken }).then(
      function (r) {
        refreshing = false;
        if (gen !== generation) return; // signed out (or in again) meanwhile
        applyAuth(r.data.refreshToken, r.skew, previous);
      },
      function (err) {
        refreshing = false;
        if (gen !== generation) return;
        // A network blip while the access token still works: try again soon.
        if (err.code === 'NETWORK' && Date.now() < previous.expiresAt - 10 * 1000) {
          clearTimeout(refreshTimer);
          refreshTimer = setTimeout(refresh, 10 * 1000);
          return;
        }
        clearSession('session expired, sign in again', 'error');
      }
    );
  }

  // Timers are throttled in background tabs: catch up when shown again.
  document.addEventListener('visibilitychange', function () {
    if (document.visibilityState === 'visible' && session && Date.now() >= refreshDueAt(session)) refresh();
  });

  function signIn(ev) {
    ev.preventDefault();
    var email = el.email.value.trim();
    var password = el.password.value;
    var otp = el.otp.hidden ? '' : el.otp.value.trim();
    if (!email || !password) {
      setStatus('Enter your email and password', 'error');
      (email ? el.password : el.email).focus();
      return;
    }
    if (!el.otp.hidden && !otp) {
      setStatus('Enter the code from your authenticator app (or a recovery code)', 'error');
      el.otp.focus();
      return;
    }
    var input = { email: email, password: password };
    if (otp) input.otp = otp;
    var gen = ++generation;
    el.submit.disabled = true;
    setStatus('Signing in\u2026', 'busy');
    gql(LOGIN, { i: input }).then(
      function (r) {
        el.submit.disabled = false;
        if (gen !== generation) return;
        el.password.value = '';
        showOtp(false);
        applyAuth(r.data.login, r.skew, null);
      },
      function (err) {
        el.submit.disabled = false;
        if (gen !== generation) return;
        if (err.code === 'TWO_FACTOR_REQUIRED') {
          showOtp(true);
          el.otp.value = '';
          el.otp.focus();
        }
        setStatus(describe(err), 'error');
      }
    );
  }

  function signOut() {
    var s = session;
    clearSession('Signing out\u2026', 'busy');
    showOtp(false);
    if (!s) {
      setStatus('Signed out', 'info');
      return;
    }
    var gen = generation;
    gql(LOGOUT, { t: s.refreshToken }, s.accessToken).then(
      function () {
        if (gen === generation) setStatus('Signed out', 'info');
      },
      function (err) {
        // The local session is gone either way.
        if (gen === generation) setStatus('Signed out (server: ' + describe(err) + ')', 'info');
      }
    );
  }

  // ---------------------------------------------------------------- fetcher

  function bearerOf(value) {
    var m = /^\s*Bearer\s+(\S+)\s*$/i.exec(value || '');
    return m ? m[1] : null;
  }

  // fetch for GraphiQL's HTTP requests: adds the current token when the
  // Headers editor has no Authorization header, and swaps a stale token this
  // page issued (after a refresh, or in another GraphiQL tab) for the
  // current one. A token typed in by hand is left alone.
  function authFetch(input, init) {
    init = Object.assign({}, init || {});
    var headers = new Headers(init.headers || {});
    var current = session && session.accessToken;
    var given = headers.get('authorization');
    if (!given) {
      if (current) headers.set('authorization', 'Bearer ' + current);
    } else {
      var token = bearerOf(given);
      if (token && (issuedTokens[token] || token === TOKEN_PLACEHOLDER) && token !== current) {
        if (current) headers.set('authorization', 'Bearer ' + current);
        else headers.delete('authorization');
      }
    }
    init.headers = headers;
    return fetch(input, init).then(function (res) {
      var type = res.headers.get('content-type') || '';
      if (/json/i.test(type)) {
        res
          .clone()
          .json()
          .then(inspectResult, function () {});
      }
      return res;
    });
  }

  // Reacts to a few results run from the editor.
  function inspectResult(body) {
    var data = body && body.data;
    if (!data || typeof data !== 'object') return;
    var enrollment = data.beginTwoFactorEnrollment;
    if (enrollment && typeof enrollment.qrCodeSvg === 'string') showQr(enrollment.qrCodeSvg);
    if (session && data.confirmTwoFactor) {
      session.twoFactorEnrollmentRequired = false;
      saveSession();
      renderNotice();
    }
    if (session && data.changePassword === true) {
      // The server revoked every refresh token of the user: this session
      // lasts until the access token expires.
      session.passwordChangeRequired = false;
      saveSession();
      renderNotice();
      el.notice.textContent = '\u2014 password changed; sign in again with the new one';
      el.notice.hidden = false;
    }
  }

  function showQr(svg) {
    el.qrImage.src = 'data:image/svg+xml;charset=utf-8,' + encodeURIComponent(svg);
    if (typeof el.qrDialog.showModal === 'function') {
      if (!el.qrDialog.open) el.qrDialog.showModal();
    } else {
      el.qrDialog.setAttribute('open', '');
    }
  }
  el.qrClose.addEventListener('click', function () {
    if (typeof el.qrDialog.close === 'function') el.qrDialog.close();
    else el.qrDialog.removeAttribute('open');
    el.qrImage.removeAttribute('src');
  });

  // ---------------------------------------------------------------- websocket

  function wsUrl() {
    return (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + WS_PATH;
  }

  var wsCurrent = null; // { client, active, retired }

  function wsEntry() {
    if (!wsCurrent) {
      var entry = { client: null, active: 0, retired: false };
      entry.client = window.graphqlWs.createClient({
        url: wsUrl(),
        lazy: true,
        // Read when a socket opens (also on a reconnect): the current token.
        connectionParams: function () {
          return session ? { Authorization: 'Bearer ' + session.accessToken } : {};
        },
        retryAttempts: 3,
        // 4401/4403/4429 and the like are final; retry dropped connections.
        shouldRetry: function (e) {
          return !(e && typeof e.code === 'number' && e.code >= 4000 && e.code < 5000);
        },
      });
      wsCurrent = entry;
    }
    return wsCurrent;
  }

  // Closes the socket of the current client: at once, or once its running
  // subscriptions end. The next subscription opens a new one.
  function retireWsClient(now) {
    var entry = wsCurrent;
    wsCurrent = null;
    if (!entry) return;
    entry.retired = true;
    if (now || entry.active === 0) entry.client.dispose();
  }

  // A WebSocket failure as a GraphQL result. GraphiQL 3 (its
  // push-pull iterator) drops errors passed to sink.error without showing
  // them, so failures are delivered as a last result instead.
  function errorResult(err) {
    if (Array.isArray(err)) return { errors: err }; // the server's "error" message
    if (err && typeof err.code === 'number' && 'reason' in err) {
      return {
        errors: [
          {
            message: ('Socket closed with event ' + err.code + ' ' + (err.reason || '')).trim(),
            extensions: { code: 'WEBSOCKET_CLOSED', closeCode: err.code },
          },
        ],
      };
    }
    var message = err && err.message ? err.message : String(err || 'WebSocket error');
    if (err && err.type === 'error' && !err.message) message = 'WebSocket error (could not connect to ' + WS_PATH + ')';
    return { errors: [{ message: message, extensions: { code: 'WEBSOCKET_ERROR' } }] };
  }

  function failLater(sink, result) {
    // After GraphiQL has started reading, or the result is lost.
    setTimeout(function () {
      sink.next(result);
      sink.complete();
    }, 0);
  }

  // What GraphiQL's createFetcher calls for subscription operations.
  var wsClient = {
    subscribe: function (payload, sink) {
      if (!session) {
        failLater(sink, {
          errors: [
            {
              message: 'Sign in first: subscriptions over ' + WS_PATH + ' need an access token.',
              extensions: { code: 'UNAUTHENTICATED' },
            },
          ],
        });
        return function () {};
      }
      var entry = wsEntry();
      entry.active++;
      var finished = false;
      function finish() {
        if (finished) return;
        finished = true;
        entry.active--;
        if (entry.retired && entry.active === 0) entry.client.dispose();
      }
      var unsubscribe = entry.client.subscribe(payload, {
        next: function (value) {
          sink.next(value);
        },
        error: function (err) {
          finish();
          failLater(sink, errorResult(err));
        },
        complete: function () {
          finish();
          sink.complete();
        },
      });
      return function () {
        unsubscribe();
        finish();
      };
    },
  };

  // ---------------------------------------------------------------- GraphiQL

  var root = null;
  var fetcher = null;
  var baseFetcher = null;
  // Whether the fetcher in use was made signed in: GraphiQL loads the schema
  // again when it is handed a new fetcher, which matters where only
  // signed-in callers may introspect (GRAPHQL_INTROSPECTION=signed-in, the
  // production default).
  var fetcherSignedIn = null;

  // GraphiQL parses the editor text for documentAST (which createFetcher
  // uses to send subscriptions over the WebSocket) after a short debounce:
  // parse the text that is actually sent, so a run right after the text
  // changed (e.g. from a test) still takes the right transport.
  function makeFetcher() {
    return function (params, opts) {
      if (params && typeof params.query === 'string') {
        try {
          var ast = window.GraphiQL.GraphQL.parse(params.query);
          opts = Object.assign({}, opts || {}, { documentAST: ast });
        } catch (e) {
          /* invalid text: the server reports it */
        }
      }
      return baseFetcher(params, opts);
    };
  }
  var params = new URLSearchParams(location.search);
  var urlQuery = params.get('query');

  function headersText() {
    return session ? JSON.stringify({ Authorization: 'Bearer ' + session.accessToken }, null, 2) : '';
  }

  function renderGraphiQL() {
    if (!root) return;
    if (fetcherSignedIn !== !!session) {
      fetcherSignedIn = !!session;
      fetcher = makeFetcher();
    }
    var props = {
      fetcher: fetcher,
      storage: graphiqlStorage,
      defaultQuery: DEFAULT_QUERY,
      // A new value is written into the Headers editor (GraphiQL syncs the
      // prop into the editor whenever it changes).
      headers: headersText(),
      shouldPersistHeaders: false,
      isHeadersEditorEnabled: true,
      defaultEditorToolsVisibility: 'headers',
    };
    if (urlQuery !== null) props.query = urlQuery;
    root.render(
      window.React.createElement(
        window.GraphiQL,
        props,
        window.React.createElement(window.GraphiQL.Logo, null, 'Stockroom')
      )
    );
  }

  function start() {
    if (!window.React || !window.ReactDOM || !window.GraphiQL || !window.graphqlWs) {
      setStatus('GraphiQL assets failed to load', 'error');
      return;
    }
    el.form.addEventListener('submit', signIn);
    el.logout.addEventListener('click', signOut);

    baseFetcher = window.GraphiQL.createFetcher({
      url: ENDPOINT,
      fetch: authFetch,
      wsClient: wsClient,
    });

    var restored = loadSession();
    if (restored) {
      session = restored;
      issuedTokens[restored.accessToken] = true;
      renderBar();
      scheduleRefresh(); // refreshes at once when it is already due
    } else {
      renderBar();
    }

    el.mount.textContent = '';
    root = window.ReactDOM.createRoot(el.mount);
    renderGraphiQL();
  }

  start();
})();
