// The console's shell: the sign-in gate, the navigation a role is offered,
// the language switch and a hash router with one component per page.

import { html, render, useEffect, useState } from './preact-htm.js';
import { currentSession, onSession, signOut } from './api.js';
import { LANGUAGES, language, loadCatalogues, onLanguage, setLanguage, t } from './i18n.js';
import { can } from './ui.js';
import { SignIn, PasswordChange, Enrollment } from './pages/signin.js';
import { Dashboard } from './pages/dashboard.js';
import { Products } from './pages/products.js';
import { ProductPage } from './pages/product.js';
import { Movements } from './pages/movements.js';
import { Uploads } from './pages/uploads.js';
import { Alerts } from './pages/alerts.js';
import { Audit } from './pages/audit.js';
import { Users } from './pages/users.js';

/** The pages, in the order of the navigation, with the role each needs. */
const PAGES = [
  { path: 'dashboard', key: 'nav.dashboard', role: 'VIEWER', component: Dashboard },
  { path: 'products', key: 'nav.products', role: 'VIEWER', component: Products },
  { path: 'movements', key: 'nav.movements', role: 'STAFF', component: Movements },
  { path: 'uploads', key: 'nav.uploads', role: 'MANAGER', component: Uploads },
  { path: 'alerts', key: 'nav.alerts', role: 'ADMIN', component: Alerts },
  { path: 'audit', key: 'nav.audit', role: 'MANAGER', component: Audit },
  { path: 'users', key: 'nav.users', role: 'ADMIN', component: Users },
];

function route() {
  const [path, ...rest] = location.hash.replace(/^#\/?/, '').split('/');
  return { path: path || 'dashboard', rest };
}

function useRoute() {
  const [current, setCurrent] = useState(route());
  useEffect(() => {
    const on = () => setCurrent(route());
    addEventListener('hashchange', on);
    return () => removeEventListener('hashchange', on);
  }, []);
  return current;
}

function LanguageSwitch() {
  return html`<label class="lang">
    <span class="visually-hidden">${t('app.language')}</span>
    <select aria-label=${t('app.language')} value=${language()} onChange=${(e) => setLanguage(e.target.value)}>
      ${LANGUAGES.map((code) => html`<option value=${code} selected=${code === language()}>${t(`lang.${code}`)}</option>`)}
    </select>
  </label>`;
}

/** The skip link moves the focus to the content; the address (the route) stays. */
function skipToContent(e) {
  e.preventDefault();
  document.getElementById('main').focus();
}

function Shell({ session }) {
  const { path, rest } = useRoute();
  const user = session.user;
  const offered = PAGES.filter((p) => can(user, p.role));
  let page;
  if (path === 'products' && rest[0]) {
    page = html`<${ProductPage} id=${decodeURIComponent(rest[0])} user=${user} />`;
  } else {
    const found = offered.find((p) => p.path === path);
    page = found
      ? html`<${found.component} user=${user} />`
      : html`<section><h1>${t('app.notFound')}</h1><p><a href="#/dashboard">${t('nav.dashboard')}</a></p></section>`;
  }
  return html`
    <a class="skip" href="#main" onClick=${skipToContent}>${t('app.skip')}</a>
    <header class="top">
      <strong class="brand">${t('app.title')}</strong>
      <nav aria-label=${t('app.navigation')}>
        <ul>
          ${offered.map(
            (p) => html`<li><a href=${`#/${p.path}`} aria-current=${p.path === path ? 'page' : null}>${t(p.key)}</a></li>`,
          )}
        </ul>
      </nav>
      <div class="who">
        <span>${user.displayName} · ${t(`role.${user.role}`)}</span>
        <${LanguageSwitch} />
        <button type="button" class="link" onClick=${() => signOut()}>${t('app.signOut')}</button>
        <a class="muted" href="/graphql">GraphiQL</a>
      </div>
    </header>
    <main id="main" tabindex="-1">${page}</main>`;
}

function App() {
  const [session, setSession] = useState(currentSession());
  const [, setLang] = useState(language());
  useEffect(() => onSession(setSession), []);
  useEffect(() => onLanguage(setLang), []);
  if (!session) {
    return html`<header class="top"><strong class="brand">${t('app.title')}</strong><div class="who"><${LanguageSwitch} /></div></header>
      <main id="main"><${SignIn} /></main>`;
  }
  if (session.passwordChangeRequired) {
    return html`<main id="main"><${PasswordChange} forced=${true} /></main>`;
  }
  if (session.twoFactorEnrollmentRequired) {
    return html`<main id="main"><${Enrollment} forced=${true} /></main>`;
  }
  return html`<${Shell} session=${session} />`;
}

loadCatalogues().then(() => {
  const root = document.getElementById('app');
  root.textContent = '';
  render(html`<${App} />`, root);
  // When the first screen can be used, for real-user timing and the tests.
  performance.mark('stockroom:interactive');
});
