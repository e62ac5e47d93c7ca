// Alerts and settings (ADMIN): the Telegram settings (the token is
// write-only: its hint and source are shown, never the token), a pause,
// the chat ids and kinds, the test send of the checklist, and the queue by
// status, live, with retry for a dead alert.

import { html, useEffect, useState } from '../preact-htm.js';
import { gql, live } from '../api.js';
import { dateTime, number, t } from '../i18n.js';
import { ErrorLine, Field, Loading, Notice, useAction, useLoad } from '../ui.js';

const SETTINGS = 'telegramEnabled chatIds botTokenConfigured botTokenSource botTokenHint botName enabledKinds updatedAt configured';
const ALERT = 'id kind status chatId message attempts retryAt lastError createdAt sentAt updatedAt';
const KINDS = ['LOW_STOCK', 'OUT_OF_STOCK', 'STOCK_MOVEMENT', 'UPLOAD_FINISHED', 'LOGIN_FAILURES', 'TEST'];
const STATUSES = ['PENDING', 'SENDING', 'SENT', 'DEAD'];

export function Alerts() {
  return html`<section>
    <h1>${t('nav.alerts')}</h1>
    <${Settings} />
    <${Queue} />
  </section>`;
}

function Settings() {
  const loaded = useLoad(() => gql(`{ notificationSettings { ${SETTINGS} } }`).then((d) => d.notificationSettings), []);
  const [form, setForm] = useState(null);
  const [token, setToken] = useState('');
  const save = useAction();
  const test = useAction();
  useEffect(() => {
    if (loaded.data) setForm({ enabled: loaded.data.telegramEnabled, chats: loaded.data.chatIds.join('\n'), kinds: loaded.data.enabledKinds });
  }, [loaded.data]);
  if (!form) return html`<${Loading} when=${loaded.loading} /><${ErrorLine} error=${loaded.error} />`;
  const s = loaded.data;
  const submit = async (e) => {
    e.preventDefault();
    const input = {
      telegramEnabled: form.enabled,
      chatIds: form.chats.split(/[\s,]+/).filter(Boolean),
      enabledKinds: form.kinds,
    };
    if (token.trim()) input.botToken = token.trim();
    const saved = await save.run(
      () => gql(`mutation ($input: UpdateNotificationSettingsInput!) { updateNotificationSettings(input: $input) { ${SETTINGS} } }`, { input }).then((d) => d.updateNotificationSettings),
      () => t('settings.saved'),
    );
    if (saved) {
      setToken('');
      loaded.setData(() => saved);
    }
  };
  const toggleKind = (k) => (e) => setForm({ ...form, kinds: e.target.checked ? [...form.kinds, k] : form.kinds.filter((x) => x !== k) });
  return html`<form class="card" id="settings-form" onSubmit=${submit}>
    <h2>${t('settings.title')}</h2>
    <p id="token-state">${s.botTokenConfigured
      ? t('settings.tokenSet', { hint: s.botTokenHint || '…', source: t(`settings.source.${s.botTokenSource}`), bot: s.botName || '' })
      : t('settings.tokenMissing')}</p>
    <${Field} id="st-token" label=${t('settings.token')} hint=${t('settings.tokenHint')}>
      <input id="st-token" type="password" autocomplete="off" value=${token} onInput=${(e) => setToken(e.target.value)} />
    <//>
    <label class="check"><input type="checkbox" id="st-enabled" checked=${form.enabled} onChange=${(e) => setForm({ ...form, enabled: e.target.checked })} /> ${t('settings.enabled')}</label>
    <${Field} id="st-chats" label=${t('settings.chats')} hint=${t('settings.chatsHint')}>
      <textarea id="st-chats" value=${form.chats} onInput=${(e) => setForm({ ...form, chats: e.target.value })}></textarea>
    <//>
    <fieldset><legend>${t('settings.kinds')}</legend>
      ${KINDS.filter((k) => k !== 'TEST').map((k) => html`<label class="check"><input type="checkbox" checked=${form.kinds.includes(k)} onChange=${toggleKind(k)} /> ${t(`alertKind.${k}`)}</label>`)}
    </fieldset>
    <${ErrorLine} error=${save.error} />
    <${Notice} text=${save.message} />
    <div class="actions">
      <button type="submit" id="settings-save" disabled=${save.busy}>${t('common.save')}</button>
      <button type="button" id="test-send" disabled=${test.busy}
        onClick=${() => test.run(() => gql(`mutation { sendTestAlert { ${ALERT} } }`).then((d) => d.sendTestAlert), (a) => t('settings.testQueued', { status: t(`alert.${a.status}`) }))}>${t('settings.test')}</button>
    </div>
    <${ErrorLine} error=${test.error} />
    <${Notice} text=${test.message} />
  </form>`;
}

function Queue() {
  const [status, setStatus] = useState('');
  const { data, error, loading, setData, reload } = useLoad(
    () => gql(`query ($s: AlertStatus) { alerts(first: 50, status: $s) { totalCount nodes { ${ALERT} } } }`, { s: status || null }).then((d) => d.alerts),
    [status],
  );
  const [liveError, setLiveError] = useState(null);
  const retry = useAction();
  useEffect(
    () =>
      live(`subscription { alertUpdated { ${ALERT} } }`, {}, ({ alertUpdated: a }) =>
        setData((d) => {
          if (!d) return d;
          const known = d.nodes.some((n) => n.id === a.id);
          const nodes = known ? d.nodes.map((n) => (n.id === a.id ? a : n)) : [a, ...d.nodes];
          return { totalCount: d.totalCount + (known ? 0 : 1), nodes: nodes.filter((n) => !status || n.status === status) };
        }),
      { onError: setLiveError }),
    [status],
  );
  return html`<section aria-labelledby="queue-title">
    <h2 id="queue-title">${t('alerts.queue')}</h2>
    <form class="filters" onSubmit=${(e) => e.preventDefault()}>
      <${Field} id="al-status" label=${t('alerts.status')}>
        <select id="al-status" value=${status} onChange=${(e) => setStatus(e.target.value)}>
          <option value="">${t('common.all')}</option>
          ${STATUSES.map((s) => html`<option value=${s}>${t(`alert.${s}`)}</option>`)}
        </select>
      <//>
    </form>
    <${ErrorLine} error=${error || liveError || retry.error} />
    <${Notice} text=${retry.message} />
    <${Loading} when=${loading && !data} />
    ${data
      ? html`<table id="alerts"><thead><tr>
          <th scope="col">${t('alerts.created')}</th><th scope="col">${t('alerts.kind')}</th><th scope="col">${t('alerts.status')}</th>
          <th scope="col">${t('alerts.chat')}</th><th scope="col" class="num">${t('alerts.attempts')}</th><th scope="col">${t('alerts.message')}</th><th scope="col"></th></tr></thead>
          <tbody>${data.nodes.map(
            (a) => html`<tr data-alert=${a.id} data-status=${a.status}>
              <td>${dateTime(a.createdAt)}</td><td>${t(`alertKind.${a.kind}`)}</td><td>${t(`alert.${a.status}`)}${a.lastError ? html`<br /><small class="muted">${a.lastError}</small>` : null}</td>
              <td>${a.chatId}</td><td class="num">${number(a.attempts)}</td><td>${a.message}</td>
              <td>${a.status === 'DEAD'
                ? html`<button type="button" onClick=${() => retry.run(() => gql('mutation ($id: ID!) { retryAlert(id: $id) { id status } }', { id: a.id }), () => t('alerts.retried'))}>${t('alerts.retry')}</button>`
                : null}</td>
            </tr>`,
          )}</tbody></table>
          <button type="button" class="link" onClick=${reload}>${t('common.refresh')}</button>`
      : null}
  </section>`;
}
