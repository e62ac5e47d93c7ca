// Small pieces every page uses: the loading/error states of a request, a
// form field, a message line, role checks.

import { html, useEffect, useState, useCallback } from './preact-htm.js';
import { errorText, t } from './i18n.js';

const RANK = { VIEWER: 0, STAFF: 1, MANAGER: 2, ADMIN: 3 };

/** Whether `user` holds `role` or a higher one. */
export function can(user, role) {
  return !!user && RANK[user.role] >= RANK[role];
}

/**
 * Runs `load` now and whenever `deps` change; `reload()` runs it again.
 * Returns `{ data, error, loading, reload, setData }`.
 */
export function useLoad(load, deps) {
  const [state, setState] = useState({ data: null, error: null, loading: true });
  const [tick, setTick] = useState(0);
  useEffect(() => {
    let live = true;
    setState((s) => ({ ...s, loading: true }));
    load().then(
      (data) => live && setState({ data, error: null, loading: false }),
      (error) => live && setState({ data: null, error, loading: false }),
    );
    return () => {
      live = false;
    };
  }, [...deps, tick]);
  const reload = useCallback(() => setTick((n) => n + 1), []);
  const setData = useCallback((fn) => setState((s) => ({ ...s, data: fn(s.data) })), []);
  return { ...state, reload, setData };
}

/**
 * An error by its code, in words, announced to screen readers; the code and
 * the server's own message (which names the field) follow in small print.
 */
export function ErrorLine({ error }) {
  if (!error) return null;
  return html`<p class="error" role="alert" data-code=${error.code}>
    ${errorText(error)} <small class="detail">${error.code}${error.message ? ` · ${error.message}` : ''}</small>
  </p>`;
}

export function Notice({ text }) {
  return text ? html`<p class="notice" role="status">${text}</p>` : null;
}

export function Loading({ when }) {
  return when ? html`<p class="muted" role="status">${t('common.loading')}</p>` : null;
}

/** A labelled input; `id` ties the label to it. */
export function Field({ id, label, hint, children }) {
  return html`<div class="field">
    <label for=${id}>${label}</label>
    ${children}
    ${hint ? html`<small class="muted">${hint}</small>` : null}
  </div>`;
}

/** A mutation's state: `run(fn)` sets busy, error and message. */
export function useAction() {
  const [state, setState] = useState({ busy: false, error: null, message: '' });
  const run = useCallback(async (fn, success) => {
    setState({ busy: true, error: null, message: '' });
    try {
      const result = await fn();
      setState({ busy: false, error: null, message: success ? success(result) : '' });
      return result;
    } catch (error) {
      setState({ busy: false, error, message: '' });
      return undefined;
    }
  }, []);
  return { ...state, run };
}

/** A fresh idempotency key for one submission of a form. */
export function newKey() {
  return crypto.randomUUID();
}
