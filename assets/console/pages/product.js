// One product: its details (edit with the version it was read at, a
// conflict shown side by side and resolved by the user; archive), its
// ledger page by page, and its stock live: the stream starts after the
// version the query answered, so no movement in between is missed.

import { html, useEffect, useState } from '../preact-htm.js';
import { currency, gql, live } from '../api.js';
import { dateTime, money, moneyStep, number, t, toMajor, toMinor } from '../i18n.js';
import { ErrorLine, Field, Loading, Notice, can, useAction, useLoad } from '../ui.js';
import { PRODUCT_FIELDS } from './products.js';
import { MovementTable } from './dashboard.js';
import { MovementForm } from './movements.js';

const MOVEMENT = 'id kind quantity balanceAfter createdAt note reference product { id sku } createdBy { displayName }';
const LEDGER = 20;

export function ProductPage({ id, user }) {
  const { data, error, loading, setData, reload } = useLoad(
    () =>
      gql(
        `query ($id: ID!, $n: Int) { product(id: $id) { ${PRODUCT_FIELDS} movements(first: $n) { pageInfo { hasNextPage endCursor } nodes { ${MOVEMENT} } } } }`,
        { id, n: LEDGER },
      ).then((d) => d.product),
    [id],
  );
  const [liveError, setLiveError] = useState(null);
  const version = data && data.version;
  const loaded = !!data;
  useEffect(() => {
    if (!loaded) return undefined;
    return live(
      `subscription ($id: ID!, $after: String) { stockChanged(productId: $id, after: $after) { cursor product { ${PRODUCT_FIELDS} } movement { ${MOVEMENT} } } }`,
      { id, after: String(version) },
      ({ stockChanged: { product, movement } }) =>
        setData((d) => ({
          ...d,
          ...product,
          movements: { ...d.movements, nodes: [movement, ...d.movements.nodes.filter((m) => m.id !== movement.id)] },
        })),
      { cursorOf: (d) => d.stockChanged.cursor, onError: setLiveError },
    );
  }, [id, loaded]);
  if (loading && !data) return html`<${Loading} when=${true} />`;
  if (error) return html`<${ErrorLine} error=${error} />`;
  if (!data) return html`<section><h1>${t('app.notFound')}</h1></section>`;
  return html`<section>
    <p><a href="#/products">${t('nav.products')}</a></p>
    <h1>${data.name} <small class="muted">${data.sku}</small></h1>
    <div class="tiles">
      <div class="tile"><span>${t('product.stock')}</span><strong id="product-stock" aria-live="polite">${number(data.stock)}</strong><small>${data.unit}</small></div>
      <div class="tile"><span>${t('product.threshold')}</span><strong>${number(data.lowStockThreshold)}</strong>${data.isLowStock ? html`<small class="warn">${t('product.low')}</small>` : null}</div>
      <div class="tile"><span>${t('product.version')}</span><strong id="product-version">${number(data.version)}</strong></div>
    </div>
    ${data.archivedAt ? html`<p class="notice" id="archived-note">${t('product.archivedAt', { when: dateTime(data.archivedAt) })}</p>` : null}
    <${ErrorLine} error=${liveError} />
    ${can(user, 'MANAGER') && !data.archivedAt ? html`<${EditProduct} product=${data} onSaved=${(p) => setData((d) => ({ ...d, ...p }))} />` : html`<${Details} product=${data} />`}
    ${can(user, 'STAFF') && !data.archivedAt ? html`<${MovementForm} product=${data} />` : null}
    <section aria-labelledby="ledger-title">
      <h2 id="ledger-title">${t('product.ledger')}</h2>
      <${MovementTable} id="ledger" movements=${data.movements.nodes} withProduct=${false} />
      ${data.movements.pageInfo.hasNextPage ? html`<${More} id=${id} after=${data.movements.pageInfo.endCursor} />` : null}
    </section>
    <p><button type="button" class="link" onClick=${reload}>${t('common.refresh')}</button></p>
  </section>`;
}

function Details({ product }) {
  const code = useLoad(currency, []).data;
  return html`<dl class="details">
    <dt>${t('product.unitCost')}</dt><dd>${money(product.unitCost, code)}</dd>
    <dt>${t('product.category')}</dt><dd>${product.category || ''}</dd>
    <dt>${t('product.unit')}</dt><dd>${product.unit}</dd>
    <dt>${t('product.description')}</dt><dd>${product.description || ''}</dd>
    <dt>${t('product.updatedAt')}</dt><dd>${dateTime(product.updatedAt)}</dd>
  </dl>`;
}

/** Older ledger pages, loaded on demand. */
function More({ id, after }) {
  const [pages, setPages] = useState([]);
  const [cursor, setCursor] = useState(after);
  const [more, setMore] = useState(true);
  const action = useAction();
  const load = () =>
    action.run(async () => {
      const d = await gql(
        `query ($id: ID!, $n: Int, $after: String) { product(id: $id) { movements(first: $n, after: $after) { pageInfo { hasNextPage endCursor } nodes { ${MOVEMENT} } } } }`,
        { id, n: LEDGER, after: cursor },
      );
      const m = d.product.movements;
      setPages([...pages, ...m.nodes]);
      setCursor(m.pageInfo.endCursor);
      setMore(m.pageInfo.hasNextPage);
    });
  return html`${pages.length ? html`<${MovementTable} movements=${pages} withProduct=${false} />` : null}
    <${ErrorLine} error=${action.error} />
    ${more ? html`<button type="button" onClick=${load} disabled=${action.busy}>${t('common.older')}</button>` : null}`;
}

const EDITABLE = ['name', 'category', 'unit', 'lowStockThreshold', 'unitCost', 'description'];

/** The form's text of each field; the unit cost in whole currency units. */
function formValues(product, code) {
  return Object.fromEntries(
    EDITABLE.map((k) => {
      const v = product[k];
      if (k === 'unitCost') return [k, code ? toMajor(v, code) : ''];
      return [k, v === null || v === undefined ? '' : String(v)];
    }),
  );
}

function EditProduct({ product, onSaved }) {
  const code = useLoad(currency, []).data;
  return code ? html`<${EditForm} product=${product} onSaved=${onSaved} code=${code} />` : html`<${Loading} when=${true} />`;
}

function EditForm({ product, onSaved, code }) {
  const [form, setForm] = useState(formValues(product, code));
  // The version and the values the form was read at.
  const [base, setBase] = useState({ version: product.version, values: formValues(product, code) });
  const [theirs, setTheirs] = useState(null);
  const [confirming, setConfirming] = useState(false);
  const action = useAction();
  const set = (key) => (e) => setForm({ ...form, [key]: e.target.value });
  const save = async (expectedVersion) => {
    const input = {
      name: form.name,
      category: form.category || null,
      unit: form.unit,
      description: form.description || null,
      lowStockThreshold: Number(form.lowStockThreshold || 0),
      unitCost: form.unitCost === '' ? null : toMinor(form.unitCost, code),
    };
    const saved = await action.run(
      () =>
        gql(`mutation ($id: ID!, $input: UpdateProductInput!, $v: Int) { updateProduct(id: $id, input: $input, expectedVersion: $v) { ${PRODUCT_FIELDS} } }`, {
          id: product.id,
          input,
          v: expectedVersion,
        }).then((d) => d.updateProduct),
      () => t('product.saved'),
    );
    if (saved) {
      setBase({ version: saved.version, values: formValues(saved, code) });
      setTheirs(null);
      onSaved(saved);
      return;
    }
    // A conflict: read what is stored now. A movement also moves the
    // version; when none of the fields here changed, save over it at once,
    // else show both versions side by side.
    const now = await gql(`query ($id: ID!) { product(id: $id) { ${PRODUCT_FIELDS} } }`, { id: product.id }).catch(() => null);
    const stored = now && now.product;
    if (!stored || stored.version === expectedVersion) return;
    const storedValues = formValues(stored, code);
    if (!theirs && EDITABLE.every((k) => storedValues[k] === base.values[k])) {
      setBase({ version: stored.version, values: storedValues });
      await save(stored.version);
    } else {
      setTheirs(stored);
    }
  };
  const archive = async () => {
    const archived = await action.run(
      () => gql(`mutation ($id: ID!) { deleteProduct(id: $id) { ${PRODUCT_FIELDS} } }`, { id: product.id }).then((d) => d.deleteProduct),
      () => t('product.archivedDone'),
    );
    setConfirming(false);
    if (archived) onSaved(archived);
  };
  return html`<form class="card" id="edit-product" onSubmit=${(e) => { e.preventDefault(); save(base.version); }}>
    <h2>${t('product.edit')}</h2>
    <div class="grid">
      <${Field} id="ep-name" label=${t('product.name')}><input id="ep-name" required value=${form.name} onInput=${set('name')} /><//>
      <${Field} id="ep-category" label=${t('product.category')}><input id="ep-category" value=${form.category} onInput=${set('category')} /><//>
      <${Field} id="ep-unit" label=${t('product.unit')}><input id="ep-unit" required value=${form.unit} onInput=${set('unit')} /><//>
      <${Field} id="ep-threshold" label=${t('product.threshold')}><input id="ep-threshold" type="number" min="0" value=${form.lowStockThreshold} onInput=${set('lowStockThreshold')} /><//>
      <${Field} id="ep-cost" label=${t('product.unitCostIn', { currency: code })}><input id="ep-cost" type="number" min="0" step=${moneyStep(code)} value=${form.unitCost} onInput=${set('unitCost')} /><//>
    </div>
    <${Field} id="ep-description" label=${t('product.description')}><textarea id="ep-description" value=${form.description} onInput=${set('description')}></textarea><//>
    <${ErrorLine} error=${action.error} />
    <${Notice} text=${action.message} />
    ${theirs
      ? html`<div class="conflict" id="conflict" role="alert">
          <p>${t('product.conflict', { v: theirs.version })}</p>
          <table><thead><tr><th scope="col"></th><th scope="col">${t('product.mine')}</th><th scope="col">${t('product.theirs')}</th></tr></thead>
            <tbody>${EDITABLE.map((k) => html`<tr><th scope="row">${t(`product.field.${k}`)}</th><td>${form[k]}</td><td>${formValues(theirs, code)[k]}</td></tr>`)}</tbody></table>
          <button type="button" id="keep-mine" onClick=${() => { setBase({ version: theirs.version, values: formValues(theirs, code) }); save(theirs.version); }}>${t('product.keepMine')}</button>
          <button type="button" id="take-theirs" onClick=${() => { setForm(formValues(theirs, code)); setBase({ version: theirs.version, values: formValues(theirs, code) }); setTheirs(null); onSaved(theirs); }}>${t('product.takeTheirs')}</button>
        </div>`
      : null}
    <div class="actions">
      <button type="submit" id="save-product" disabled=${action.busy}>${t('common.save')}</button>
      ${confirming
        ? html`<span role="alert">${t('product.archiveConfirm')}</span>
            <button type="button" class="danger" id="archive-confirm" onClick=${archive}>${t('product.archive')}</button>
            <button type="button" class="link" onClick=${() => setConfirming(false)}>${t('common.cancel')}</button>`
        : html`<button type="button" class="danger" id="archive-product" onClick=${() => setConfirming(true)}>${t('product.archive')}</button>`}
    </div>
  </form>`;
}
