// Products: the connection page by page on the server (search by SKU and
// name, category, low stock, archived), and the create form (MANAGER).

import { html, useEffect, useState } from '../preact-htm.js';
import { currency, gql } from '../api.js';
import { moneyStep, number, t, toMinor } from '../i18n.js';
import { ErrorLine, Field, Loading, Notice, can, useAction, useLoad } from '../ui.js';

const PAGE = 25;
/** The orders offered: `field.direction`, as the API takes them. */
const ORDERS = ['CREATED_AT.ASC', 'CREATED_AT.DESC', 'SKU.ASC', 'SKU.DESC', 'NAME.ASC', 'NAME.DESC', 'STOCK.ASC', 'STOCK.DESC'];
export const PRODUCT_FIELDS = 'id sku name description category unit stock lowStockThreshold unitCost version archivedAt createdAt updatedAt isLowStock';

const QUERY = `query ($first: Int, $after: String, $filter: ProductFilter, $order: ProductOrder) {
  products(first: $first, after: $after, filter: $filter, orderBy: $order) {
    totalCount pageInfo { hasNextPage endCursor }
    nodes { ${PRODUCT_FIELDS} }
  }
}`;

export function Products({ user }) {
  const [search, setSearch] = useState('');
  const [query, setQuery] = useState('');
  const [category, setCategory] = useState('');
  const [lowOnly, setLowOnly] = useState(false);
  const [archived, setArchived] = useState(false);
  const [order, setOrder] = useState(ORDERS[0]);
  // The cursors of the pages before this one, to go back.
  const [cursors, setCursors] = useState([null]);
  const [creating, setCreating] = useState(false);
  useEffect(() => {
    const timer = setTimeout(() => setQuery(search), 250);
    return () => clearTimeout(timer);
  }, [search]);
  const filter = { search: query || null, category: category.trim() || null, lowStockOnly: lowOnly, includeArchived: archived };
  const after = cursors[cursors.length - 1];
  const [field, direction] = order.split('.');
  const { data, error, loading, reload } = useLoad(
    () => gql(QUERY, { first: PAGE, after, filter, order: { field, direction } }).then((d) => d.products),
    [query, category, lowOnly, archived, order, after],
  );
  const restart = (fn) => (e) => {
    fn(e);
    setCursors([null]);
  };
  return html`<section>
    <div class="title-row">
      <h1>${t('nav.products')}</h1>
      ${can(user, 'MANAGER') ? html`<button type="button" id="new-product" onClick=${() => setCreating(!creating)} aria-expanded=${creating}>${t('products.new')}</button>` : null}
    </div>
    ${creating ? html`<${CreateProduct} onCreated=${(p) => { location.hash = `#/products/${p.id}`; }} />` : null}
    <form class="filters" role="search" onSubmit=${(e) => e.preventDefault()}>
      <${Field} id="search" label=${t('products.search')}>
        <input id="search" type="search" value=${search} onInput=${restart((e) => setSearch(e.target.value))} />
      <//>
      <${Field} id="category" label=${t('product.category')}>
        <input id="category" value=${category} onChange=${restart((e) => setCategory(e.target.value))} />
      <//>
      <${Field} id="order" label=${t('products.order')}>
        <select id="order" value=${order} onChange=${restart((e) => setOrder(e.target.value))}>
          ${ORDERS.map((o) => html`<option value=${o} selected=${o === order}>${t(`products.order.${o}`)}</option>`)}
        </select>
      <//>
      <label class="check"><input type="checkbox" id="low-only" checked=${lowOnly} onChange=${restart((e) => setLowOnly(e.target.checked))} /> ${t('products.lowOnly')}</label>
      <label class="check"><input type="checkbox" id="archived" checked=${archived} onChange=${restart((e) => setArchived(e.target.checked))} /> ${t('products.archived')}</label>
    </form>
    <${ErrorLine} error=${error} />
    <${Loading} when=${loading && !data} />
    ${data
      ? html`<p class="muted" id="products-count">${t('products.count', { n: number(data.totalCount) })}</p>
          <table id="products">
            <thead><tr>
              <th scope="col">${t('product.sku')}</th><th scope="col">${t('product.name')}</th><th scope="col">${t('product.category')}</th>
              <th scope="col" class="num">${t('product.stock')}</th><th scope="col" class="num">${t('product.threshold')}</th><th scope="col">${t('product.state')}</th>
            </tr></thead>
            <tbody>${data.nodes.map(
              (p) => html`<tr data-sku=${p.sku}>
                <td><a href=${`#/products/${p.id}`}>${p.sku}</a></td><td>${p.name}</td><td>${p.category || ''}</td>
                <td class="num">${number(p.stock)}</td><td class="num">${number(p.lowStockThreshold)}</td>
                <td>${p.archivedAt ? t('product.archived') : p.isLowStock ? html`<span class="warn">${t('product.low')}</span>` : ''}</td>
              </tr>`,
            )}</tbody>
          </table>
          <nav class="pager" aria-label=${t('common.pages')}>
            <button type="button" disabled=${cursors.length < 2} onClick=${() => setCursors(cursors.slice(0, -1))}>${t('common.previous')}</button>
            <span>${t('common.page', { n: cursors.length })}</span>
            <button type="button" id="next-page" disabled=${!data.pageInfo.hasNextPage} onClick=${() => setCursors([...cursors, data.pageInfo.endCursor])}>${t('common.next')}</button>
            <button type="button" class="link" onClick=${reload}>${t('common.refresh')}</button>
          </nav>`
      : null}
  </section>`;
}

function CreateProduct({ onCreated }) {
  const [form, setForm] = useState({ sku: '', name: '', category: '', unit: 'ea', lowStockThreshold: '0', unitCost: '', initialStock: '0', description: '' });
  const code = useLoad(currency, []).data;
  const action = useAction();
  const set = (key) => (e) => setForm({ ...form, [key]: e.target.value });
  const submit = async (e) => {
    e.preventDefault();
    const input = {
      sku: form.sku,
      name: form.name,
      category: form.category || null,
      unit: form.unit || null,
      description: form.description || null,
      lowStockThreshold: Number(form.lowStockThreshold || 0),
      unitCost: form.unitCost === '' ? null : toMinor(form.unitCost, code),
      initialStock: Number(form.initialStock || 0),
    };
    const created = await action.run(() =>
      gql('mutation ($input: CreateProductInput!) { createProduct(input: $input) { id sku } }', { input }).then((d) => d.createProduct),
    );
    if (created) onCreated(created);
  };
  return html`<form class="card" id="create-product" onSubmit=${submit}>
    <h2>${t('products.new')}</h2>
    <div class="grid">
      <${Field} id="np-sku" label=${t('product.sku')}><input id="np-sku" required value=${form.sku} onInput=${set('sku')} /><//>
      <${Field} id="np-name" label=${t('product.name')}><input id="np-name" required value=${form.name} onInput=${set('name')} /><//>
      <${Field} id="np-category" label=${t('product.category')}><input id="np-category" value=${form.category} onInput=${set('category')} /><//>
      <${Field} id="np-unit" label=${t('product.unit')}><input id="np-unit" value=${form.unit} onInput=${set('unit')} /><//>
      <${Field} id="np-threshold" label=${t('product.threshold')}><input id="np-threshold" type="number" min="0" value=${form.lowStockThreshold} onInput=${set('lowStockThreshold')} /><//>
      <${Field} id="np-cost" label=${t('product.unitCostIn', { currency: code || '' })}><input id="np-cost" type="number" min="0" step=${code ? moneyStep(code) : 'any'} value=${form.unitCost} onInput=${set('unitCost')} /><//>
      <${Field} id="np-initial" label=${t('product.initialStock')}><input id="np-initial" type="number" min="0" value=${form.initialStock} onInput=${set('initialStock')} /><//>
    </div>
    <${Field} id="np-description" label=${t('product.description')}><textarea id="np-description" value=${form.description} onInput=${set('description')}></textarea><//>
    <${ErrorLine} error=${action.error} />
    <${Notice} text=${action.message} />
    <button type="submit" disabled=${action.busy}>${t('common.create')}</button>
  </form>`;
}
