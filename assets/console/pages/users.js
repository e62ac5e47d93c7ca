// Users (ADMIN): create, change role, deactivate or reactivate, unlock,
// reset two-factor; the security report.

import { html, useState } from '../preact-htm.js';
import { USER_FIELDS, gql } from '../api.js';
import { dateTime, number, t } from '../i18n.js';
import { ErrorLine, Field, Loading, Notice, useAction, useLoad } from '../ui.js';

const ROLES = ['ADMIN', 'MANAGER', 'STAFF', 'VIEWER'];

export function Users({ user: me }) {
  const list = useLoad(() => gql(`{ users(first: 100) { totalCount nodes { ${USER_FIELDS} } } }`).then((d) => d.users), []);
  const action = useAction();
  const change = (id, mutation, variables, done) =>
    action.run(async () => {
      const d = await gql(mutation, { id, ...variables });
      const updated = Object.values(d)[0];
      list.setData((l) => ({ ...l, nodes: l.nodes.map((u) => (u.id === id ? updated : u)) }));
      return updated;
    }, (u) => t(done, { who: u.displayName }));
  const update = (id, input, done) => change(id, `mutation ($id: ID!, $input: UpdateUserInput!) { updateUser(id: $id, input: $input) { ${USER_FIELDS} } }`, { input }, done);
  return html`<section>
    <h1>${t('nav.users')}</h1>
    <${CreateUser} onCreated=${list.reload} />
    <${ErrorLine} error=${list.error || action.error} />
    <${Notice} text=${action.message} />
    <${Loading} when=${list.loading && !list.data} />
    ${list.data
      ? html`<table id="users"><thead><tr>
          <th scope="col">${t('users.name')}</th><th scope="col">${t('users.email')}</th><th scope="col">${t('users.role')}</th>
          <th scope="col">${t('users.state')}</th><th scope="col">${t('users.lastLogin')}</th><th scope="col">${t('users.actions')}</th></tr></thead>
          <tbody>${list.data.nodes.map(
            (u) => html`<tr data-email=${u.email}>
              <td>${u.displayName}</td><td>${u.email}</td>
              <td><select aria-label=${t('users.roleOf', { who: u.displayName })} value=${u.role} disabled=${u.id === me.id}
                onChange=${(e) => update(u.id, { role: e.target.value }, 'users.roleChanged')}>
                ${ROLES.map((r) => html`<option value=${r} selected=${r === u.role}>${t(`role.${r}`)}</option>`)}
              </select></td>
              <td>${u.isActive ? t('users.active') : t('users.inactive')}${u.twoFactorEnabled ? ` · ${t('users.twoFactor')}` : ''}${u.lockedUntil ? ` · ${t('users.lockedUntil', { when: dateTime(u.lockedUntil) })}` : ''}</td>
              <td>${dateTime(u.lastLoginAt)}</td>
              <td class="actions">
                ${u.id === me.id
                  ? null
                  : html`<button type="button" class=${u.isActive ? 'danger' : ''} onClick=${() => update(u.id, { isActive: !u.isActive }, u.isActive ? 'users.deactivated' : 'users.activated')}>
                      ${u.isActive ? t('users.deactivate') : t('users.activate')}</button>`}
                ${u.lockedUntil ? html`<button type="button" onClick=${() => change(u.id, `mutation ($id: ID!) { unlockUser(id: $id) { ${USER_FIELDS} } }`, {}, 'users.unlocked')}>${t('users.unlock')}</button>` : null}
                ${u.twoFactorEnabled && u.id !== me.id
                  ? html`<button type="button" onClick=${() => change(u.id, `mutation ($id: ID!) { resetTwoFactor(id: $id) { ${USER_FIELDS} } }`, {}, 'users.twoFactorReset')}>${t('users.resetTwoFactor')}</button>`
                  : null}
              </td>
            </tr>`,
          )}</tbody></table>`
      : null}
    <${SecurityReport} />
  </section>`;
}

function CreateUser({ onCreated }) {
  const empty = { email: '', displayName: '', password: '', role: 'STAFF' };
  const [form, setForm] = useState(empty);
  const action = useAction();
  const set = (key) => (e) => setForm({ ...form, [key]: e.target.value });
  const submit = async (e) => {
    e.preventDefault();
    const created = await action.run(
      () => gql('mutation ($input: CreateUserInput!) { createUser(input: $input) { id displayName } }', { input: form }).then((d) => d.createUser),
      (u) => t('users.created', { who: u.displayName }),
    );
    if (created) {
      setForm(empty);
      onCreated();
    }
  };
  return html`<form class="card" id="create-user" onSubmit=${submit}>
    <h2>${t('users.new')}</h2>
    <div class="grid">
      <${Field} id="nu-email" label=${t('users.email')}><input id="nu-email" type="email" required value=${form.email} onInput=${set('email')} /><//>
      <${Field} id="nu-name" label=${t('users.name')}><input id="nu-name" required value=${form.displayName} onInput=${set('displayName')} /><//>
      <${Field} id="nu-password" label=${t('users.password')}><input id="nu-password" type="password" autocomplete="new-password" required value=${form.password} onInput=${set('password')} /><//>
      <${Field} id="nu-role" label=${t('users.role')}>
        <select id="nu-role" value=${form.role} onChange=${set('role')}>${ROLES.map((r) => html`<option value=${r} selected=${r === form.role}>${t(`role.${r}`)}</option>`)}</select>
      <//>
    </div>
    <${ErrorLine} error=${action.error} />
    <${Notice} text=${action.message} />
    <button type="submit" disabled=${action.busy}>${t('common.create')}</button>
  </form>`;
}

function SecurityReport() {
  const report = useLoad(
    () =>
      gql(`{ securityReport { generatedAt since passwordMaxAgeDays lockoutThreshold twoFactorRequiredRoles activeUsers twoFactorUsers
        privilegedWithoutTwoFactor { email } expiredPasswords { email } lockedAccounts { email }
        failedLoginsByAccount { key count lastAt } failedLoginsByIp { key count lastAt } } }`).then((d) => d.securityReport),
    [],
  );
  const r = report.data;
  const emails = (users) => (users.length ? users.map((u) => u.email).join(', ') : t('common.none'));
  const groups = (list) => (list.length ? list.map((g) => `${g.key} (${number(g.count)})`).join(', ') : t('common.none'));
  return html`<section aria-labelledby="security-title">
    <h2 id="security-title">${t('security.title')}</h2>
    <${ErrorLine} error=${report.error} />
    ${r
      ? html`<dl class="details" id="security-report">
          <dt>${t('security.since')}</dt><dd>${dateTime(r.since)}</dd>
          <dt>${t('security.users')}</dt><dd>${t('security.usersValue', { active: number(r.activeUsers), tf: number(r.twoFactorUsers) })}</dd>
          <dt>${t('security.required')}</dt><dd>${r.twoFactorRequiredRoles.map((x) => t(`role.${x}`)).join(', ') || t('common.none')}</dd>
          <dt>${t('security.privileged')}</dt><dd>${emails(r.privilegedWithoutTwoFactor)}</dd>
          <dt>${t('security.expired')}</dt><dd>${emails(r.expiredPasswords)}</dd>
          <dt>${t('security.locked')}</dt><dd>${emails(r.lockedAccounts)}</dd>
          <dt>${t('security.byAccount')}</dt><dd>${groups(r.failedLoginsByAccount)}</dd>
          <dt>${t('security.byIp')}</dt><dd>${groups(r.failedLoginsByIp)}</dd>
        </dl>`
      : html`<${Loading} when=${report.loading} />`}
  </section>`;
}
