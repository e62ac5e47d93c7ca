// Audit log (MANAGER and above): filtered by action, actor and dates, page
// by page; live for ADMIN (auditLogAdded), new rows shown when they match.

import { html, useEffect, useState } from '../preact-htm.js';
import { gql, live } from '../api.js';
import { dateTime, t } from '../i18n.js';
import { ErrorLine, Field, Loading, can, useLoad } from '../ui.js';

const ENTRY = 'id occurredAt action entityType entityId summary ip actor { id displayName email }';
const ACTIONS = ['CREATE', 'UPDATE', 'DELETE', 'LOGIN', 'LOGIN_FAILED', 'LOGOUT', 'PASSWORD_CHANGE', 'STOCK_INBOUND', 'STOCK_OUTBOUND', 'STOCK_RETURN', 'STOCK_ADJUSTMENT', 'SETTINGS_UPDATE', 'ALERT_TEST', 'ALERT_RETRY', 'UPLOAD_CREATE', 'UPLOAD_FINISH', 'TWO_FACTOR_ENROLL', 'TWO_FACTOR_ENABLE', 'TWO_FACTOR_DISABLE', 'ACCOUNT_LOCK', 'ACCOUNT_UNLOCK', 'PASSWORD_RESET'];
const PAGE = 50;

/** A `datetime-local` value (the browser's time zone) as an instant. */
const instant = (local) => (local ? new Date(local).toISOString() : null);

export function Audit({ user }) {
  const admin = can(user, 'ADMIN');
  const [action, setAction] = useState('');
  const [actor, setActor] = useState('');
  const [from, setFrom] = useState('');
  const [to, setTo] = useState('');
  const [cursors, setCursors] = useState([null]);
  const users = useLoad(() => (admin ? gql('{ users(first: 100) { nodes { id displayName email } } }').then((d) => d.users.nodes) : Promise.resolve([])), []);
  const filter = { action: action || null, actorId: actor.trim() || null, from: instant(from), to: instant(to) };
  const after = cursors[cursors.length - 1];
  const { data, error, loading, setData } = useLoad(
    () => gql(`query ($f: AuditLogFilter, $n: Int, $after: String) { auditLogs(first: $n, after: $after, filter: $f) { totalCount pageInfo { hasNextPage endCursor } nodes { ${ENTRY} } } }`, { f: filter, n: PAGE, after }).then((d) => d.auditLogs),
    [action, actor, from, to, after],
  );
  const [liveError, setLiveError] = useState(null);
  useEffect(() => {
    if (!admin || after) return undefined;
    return live(
      `subscription { auditLogAdded { ${ENTRY} } }`,
      {},
      ({ auditLogAdded: e }) => {
        const matches = (!filter.action || e.action === filter.action) && (!filter.actorId || (e.actor && e.actor.id === filter.actorId)) && !filter.to;
        if (!matches) return;
        setData((d) => (d && !d.nodes.some((n) => n.id === e.id) ? { ...d, totalCount: d.totalCount + 1, nodes: [e, ...d.nodes] } : d));
      },
      { onError: setLiveError },
    );
  }, [admin, action, actor, to, after]);
  const restart = (setter) => (e) => {
    setter(e.target.value);
    setCursors([null]);
  };
  return html`<section>
    <h1>${t('nav.audit')}</h1>
    <form class="filters" onSubmit=${(e) => e.preventDefault()}>
      <${Field} id="au-action" label=${t('audit.action')}>
        <select id="au-action" value=${action} onChange=${restart(setAction)}>
          <option value="">${t('common.all')}</option>
          ${ACTIONS.map((a) => html`<option value=${a}>${t(`action.${a}`)}</option>`)}
        </select>
      <//>
      <${Field} id="au-actor" label=${t('audit.actor')}>
        ${admin
          ? html`<select id="au-actor" value=${actor} onChange=${restart(setActor)}>
              <option value="">${t('common.all')}</option>
              ${(users.data || []).map((u) => html`<option value=${u.id}>${u.displayName} (${u.email})</option>`)}
            </select>`
          : html`<input id="au-actor" value=${actor} placeholder=${t('audit.actorId')} onChange=${restart(setActor)} />`}
      <//>
      <${Field} id="au-from" label=${t('audit.from')}><input id="au-from" type="datetime-local" value=${from} onChange=${restart(setFrom)} /><//>
      <${Field} id="au-to" label=${t('audit.to')}><input id="au-to" type="datetime-local" value=${to} onChange=${restart(setTo)} /><//>
    </form>
    <${ErrorLine} error=${error || liveError} />
    <${Loading} when=${loading && !data} />
    ${data
      ? html`<table id="audit"><thead><tr>
          <th scope="col">${t('audit.when')}</th><th scope="col">${t('audit.action')}</th><th scope="col">${t('audit.actor')}</th>
          <th scope="col">${t('audit.entity')}</th><th scope="col">${t('audit.summary')}</th><th scope="col">${t('audit.ip')}</th></tr></thead>
          <tbody>${data.nodes.map(
            (e) => html`<tr data-action=${e.action}><td>${dateTime(e.occurredAt)}</td><td>${t(`action.${e.action}`)}</td>
              <td>${e.actor ? e.actor.displayName : t('audit.system')}</td><td>${t(`entity.${e.entityType}`)}</td><td>${e.summary}</td><td>${e.ip || ''}</td></tr>`,
          )}</tbody></table>
          <nav class="pager" aria-label=${t('common.pages')}>
            <button type="button" disabled=${cursors.length < 2} onClick=${() => setCursors(cursors.slice(0, -1))}>${t('common.previous')}</button>
            <span>${t('common.page', { n: cursors.length })}</span>
            <button type="button" disabled=${!data.pageInfo.hasNextPage} onClick=${() => setCursors([...cursors, data.pageInfo.endCursor])}>${t('common.next')}</button>
          </nav>`
      : null}
  </section>`;
}
