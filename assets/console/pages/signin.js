// Sign-in (password, then the two-factor code when asked), the forced
// password change, and two-factor enrollment with its QR code.

import { html, useState } from '../preact-htm.js';
import { changePassword, gql, reloadUser, signIn, signOut, takeNotice } from '../api.js';
import { t } from '../i18n.js';
import { ErrorLine, Field, Notice, useAction } from '../ui.js';

export function SignIn() {
  const [email, setEmail] = useState('');
  const [password, setPassword] = useState('');
  const [otp, setOtp] = useState('');
  const [needsCode, setNeedsCode] = useState(false);
  const [notice] = useState(takeNotice);
  const action = useAction();
  const submit = async (e) => {
    e.preventDefault();
    await action.run(async () => {
      try {
        return await signIn(email.trim(), password, needsCode ? otp.trim() : null);
      } catch (error) {
        // The password was right: ask for the code, without an error.
        if (error.code === 'TWO_FACTOR_REQUIRED' && !needsCode) {
          setNeedsCode(true);
          return null;
        }
        throw error;
      }
    });
  };
  return html`<section class="card narrow">
    <h1>${t('signin.title')}</h1>
    <${Notice} text=${notice ? t(notice) : ''} />
    <form onSubmit=${submit} id="signin">
      <${Field} id="email" label=${t('signin.email')}>
        <input id="email" type="email" autocomplete="username" required value=${email} onInput=${(e) => setEmail(e.target.value)} />
      <//>
      <${Field} id="password" label=${t('signin.password')}>
        <input id="password" type="password" autocomplete="current-password" required value=${password} onInput=${(e) => setPassword(e.target.value)} />
      <//>
      ${needsCode
        ? html`<${Field} id="otp" label=${t('signin.code')} hint=${t('signin.codeHint')}>
            <input id="otp" inputmode="numeric" autocomplete="one-time-code" required value=${otp} onInput=${(e) => setOtp(e.target.value)} />
          <//>`
        : null}
      <${ErrorLine} error=${action.error} />
      <button type="submit" disabled=${action.busy}>${t('signin.submit')}</button>
    </form>
  </section>`;
}

export function PasswordChange({ forced }) {
  const [current, setCurrent] = useState('');
  const [next, setNext] = useState('');
  const [repeat, setRepeat] = useState('');
  const [mismatch, setMismatch] = useState(false);
  const action = useAction();
  const submit = async (e) => {
    e.preventDefault();
    if (next !== repeat) {
      setMismatch(true);
      return;
    }
    setMismatch(false);
    await action.run(() => changePassword(current, next));
  };
  return html`<section class="card narrow">
    <h1>${t('password.title')}</h1>
    ${forced ? html`<p>${t('password.expired')}</p>` : null}
    <form onSubmit=${submit} id="password-change">
      <${Field} id="pw-current" label=${t('password.current')}>
        <input id="pw-current" type="password" autocomplete="current-password" required value=${current} onInput=${(e) => setCurrent(e.target.value)} />
      <//>
      <${Field} id="pw-new" label=${t('password.new')}>
        <input id="pw-new" type="password" autocomplete="new-password" required value=${next} onInput=${(e) => setNext(e.target.value)} />
      <//>
      <${Field} id="pw-repeat" label=${t('password.repeat')}>
        <input id="pw-repeat" type="password" autocomplete="new-password" required value=${repeat} onInput=${(e) => setRepeat(e.target.value)} />
      <//>
      ${mismatch ? html`<p class="error" role="alert">${t('password.mismatch')}</p>` : null}
      <${ErrorLine} error=${action.error} />
      <button type="submit" disabled=${action.busy}>${t('password.submit')}</button>
      ${forced ? html`<button type="button" class="link" onClick=${() => signOut()}>${t('app.signOut')}</button>` : null}
    </form>
  </section>`;
}

export function Enrollment({ forced }) {
  const [enrollment, setEnrollment] = useState(null);
  const [code, setCode] = useState('');
  const [recovery, setRecovery] = useState(null);
  const action = useAction();
  const begin = () =>
    action.run(async () => {
      const data = await gql('mutation { beginTwoFactorEnrollment { secret otpauthUri qrCodeSvg } }');
      setEnrollment(data.beginTwoFactorEnrollment);
    });
  const confirm = async (e) => {
    e.preventDefault();
    await action.run(async () => {
      const data = await gql('mutation ($c: String!) { confirmTwoFactor(code: $c) { recoveryCodes } }', { c: code.trim() });
      setRecovery(data.confirmTwoFactor.recoveryCodes);
    });
  };
  const finish = async () => {
    await reloadUser({ twoFactorEnrollmentRequired: false });
  };
  return html`<section class="card narrow">
    <h1>${t('twofactor.title')}</h1>
    ${forced ? html`<p>${t('twofactor.required')}</p>` : null}
    ${recovery
      ? html`<p>${t('twofactor.recovery')}</p>
          <ul class="codes" id="recovery-codes">${recovery.map((c) => html`<li><code>${c}</code></li>`)}</ul>
          <button type="button" onClick=${finish}>${t('twofactor.done')}</button>`
      : enrollment
        ? html`<p>${t('twofactor.scan')}</p>
            <img class="qr" alt=${t('twofactor.qrAlt')} src=${`data:image/svg+xml;charset=utf-8,${encodeURIComponent(enrollment.qrCodeSvg)}`} />
            <p>${t('twofactor.secret')} <code id="totp-secret">${enrollment.secret}</code></p>
            <form onSubmit=${confirm} id="twofactor-confirm">
              <${Field} id="tf-code" label=${t('signin.code')}>
                <input id="tf-code" inputmode="numeric" autocomplete="one-time-code" required value=${code} onInput=${(e) => setCode(e.target.value)} />
              <//>
              <button type="submit" disabled=${action.busy}>${t('twofactor.confirm')}</button>
            </form>`
        : html`<button type="button" id="twofactor-begin" onClick=${begin} disabled=${action.busy}>${t('twofactor.begin')}</button>`}
    <${ErrorLine} error=${action.error} />
    ${forced && !recovery ? html`<button type="button" class="link" onClick=${() => signOut()}>${t('app.signOut')}</button>` : null}
  </section>`;
}
