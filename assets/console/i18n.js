// The two catalogues (i18n/en.json, i18n/ko.json) and the browser's locale.
// The language is the one picked in the header, else the browser's first
// language that has a catalogue, else English. Dates and numbers follow the
// browser's locale and time zone whatever the language.

export const LANGUAGES = ['en', 'ko'];
const PICKED = 'stockroom.console.lang';

const catalogues = {};
let lang = 'en';
const listeners = new Set();

function preferred() {
  const picked = localStorage.getItem(PICKED);
  if (LANGUAGES.includes(picked)) return picked;
  for (const tag of navigator.languages || [navigator.language]) {
    const base = String(tag).toLowerCase().split('-')[0];
    if (LANGUAGES.includes(base)) return base;
  }
  return 'en';
}

/** Loads both catalogues and settles on a language. */
export async function loadCatalogues() {
  await Promise.all(
    LANGUAGES.map(async (code) => {
      const response = await fetch(`/console/i18n/${code}.json`);
      catalogues[code] = await response.json();
    }),
  );
  apply(preferred());
}

function apply(code) {
  lang = code;
  document.documentElement.lang = code;
  document.title = t('app.title');
  listeners.forEach((fn) => fn(code));
}

export function language() {
  return lang;
}

export function setLanguage(code) {
  localStorage.setItem(PICKED, code);
  apply(code);
}

export function onLanguage(fn) {
  listeners.add(fn);
  return () => listeners.delete(fn);
}

/** The text of `key` in the current language, `{name}` filled from `params`. */
export function t(key, params = {}) {
  const text = (catalogues[lang] && catalogues[lang][key]) || (catalogues.en && catalogues.en[key]) || key;
  return text.replace(/\{(\w+)\}/g, (_, name) => (name in params ? String(params[name]) : `{${name}}`));
}

/** An error code in words (a code without words: the generic line). */
export function errorText(error) {
  if (!error) return '';
  const key = `error.${error.code}`;
  const words = t(key);
  return words === key ? t('error.generic') : words;
}

const locale = () => navigator.language || 'en';

export function number(value) {
  return value === null || value === undefined ? '' : new Intl.NumberFormat(locale()).format(value);
}

export function dateTime(value) {
  if (!value) return '';
  return new Intl.DateTimeFormat(locale(), { dateStyle: 'medium', timeStyle: 'medium' }).format(new Date(value));
}

/** Digits after the point of a currency (KRW 0, USD 2). */
function digits(currency) {
  return new Intl.NumberFormat('en', { style: 'currency', currency }).resolvedOptions().maximumFractionDigits;
}

/** An amount kept in the currency's smallest unit, in the browser's locale. */
export function money(minor, currency) {
  if (minor === null || minor === undefined || !currency) return '';
  return new Intl.NumberFormat(locale(), { style: 'currency', currency }).format(minor / 10 ** digits(currency));
}

/** What a form holds (whole won, dollars and cents) to the smallest unit, and back. */
export function toMinor(major, currency) {
  return Math.round(Number(major) * 10 ** digits(currency));
}

export function toMajor(minor, currency) {
  return minor === null || minor === undefined ? '' : String(minor / 10 ** digits(currency));
}

/** The step of a money input: the currency's smallest unit. */
export function moneyStep(currency) {
  return String(1 / 10 ** digits(currency));
}
