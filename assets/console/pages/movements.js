// Movements: inbound, outbound, return and adjustment. Each form carries an
// idempotency key made when it is filled in and renewed only after a
// success, so a double click or a retry after a timeout records once.

import { html, useState } from '../preact-htm.js';
import { gql } from '../api.js';
import { number, t } from '../i18n.js';
import { ErrorLine, Field, Notice, newKey, useAction } from '../ui.js';

const KINDS = ['INBOUND', 'OUTBOUND', 'RETURN', 'ADJUSTMENT'];

export function Movements() {
  const [sku, setSku] = useState('');
  const [product, setProduct] = useState(null);
  const find = useAction();
  const lookup = async (e) => {
    e.preventDefault();
    setProduct(null);
    const found = await find.run(() =>
      gql('query ($sku: String!) { productBySku(sku: $sku) { id sku name stock unit archivedAt } }', { sku: sku.trim() }).then((d) => {
        if (!d.productBySku) throw Object.assign(new Error(sku), { code: 'NOT_FOUND' });
        return d.productBySku;
      }),
    );
    if (found) setProduct(found);
  };
  return html`<section>
    <h1>${t('nav.movements')}</h1>
    <form class="filters" id="find-product" onSubmit=${lookup}>
      <${Field} id="mv-sku" label=${t('product.sku')}><input id="mv-sku" required value=${sku} onInput=${(e) => setSku(e.target.value)} /><//>
      <button type="submit" disabled=${find.busy}>${t('movement.find')}</button>
    </form>
    <${ErrorLine} error=${find.error} />
    ${product
      ? html`<p id="mv-product"><a href=${`#/products/${product.id}`}>${product.sku}</a> · ${product.name} · ${t('product.stock')} ${number(product.stock)} ${product.unit}</p>
          <${MovementForm} key=${product.id} product=${product} onRecorded=${(m) => setProduct({ ...product, stock: m.balanceAfter })} />`
      : null}
  </section>`;
}

/** The form for one product; used here and on the product's page. */
export function MovementForm({ product, onRecorded }) {
  const [kind, setKind] = useState('INBOUND');
  const [quantity, setQuantity] = useState('');
  const [note, setNote] = useState('');
  const [reference, setReference] = useState('');
  const [key, setKey] = useState(newKey());
  const action = useAction();
  const touch = (setter) => (e) => setter(e.target.value);
  const submit = async (e) => {
    e.preventDefault();
    if (action.busy) return;
    const input = {
      productId: product.id,
      kind,
      quantity: Number(quantity),
      note: note.trim() || null,
      reference: reference.trim() || null,
      idempotencyKey: key,
    };
    const recorded = await action.run(
      () =>
        gql('mutation ($input: StockMovementInput!) { recordStockMovement(input: $input) { id kind quantity balanceAfter } }', { input }).then(
          (d) => d.recordStockMovement,
        ),
      (m) => t('movement.recorded', { kind: t(`kind.${m.kind}`), n: number(m.quantity), balance: number(m.balanceAfter) }),
    );
    if (recorded) {
      setKey(newKey());
      setQuantity('');
      setNote('');
      setReference('');
      if (onRecorded) onRecorded(recorded);
    }
  };
  return html`<form class="card" id="movement-form" onSubmit=${submit}>
    <h2>${t('movement.record')}</h2>
    <fieldset>
      <legend>${t('movement.kind')}</legend>
      ${KINDS.map(
        (k) => html`<label class="check"><input type="radio" name="kind" value=${k} checked=${kind === k} onChange=${() => setKind(k)} /> ${t(`kind.${k}`)}</label>`,
      )}
    </fieldset>
    <div class="grid">
      <${Field} id="mv-quantity" label=${t('movement.quantity')} hint=${kind === 'ADJUSTMENT' ? t('movement.adjustHint') : t('movement.quantityHint')}>
        <input id="mv-quantity" type="number" required step="1" min=${kind === 'ADJUSTMENT' ? null : 1} value=${quantity} onInput=${touch(setQuantity)} />
      <//>
      <${Field} id="mv-reference" label=${t('movement.reference')}><input id="mv-reference" value=${reference} onInput=${touch(setReference)} /><//>
    </div>
    <${Field} id="mv-note" label=${t('movement.note')}><input id="mv-note" value=${note} onInput=${touch(setNote)} /><//>
    <${ErrorLine} error=${action.error} />
    <${Notice} text=${action.message} />
    <button type="submit" id="record-movement" disabled=${action.busy}>${t('movement.submit')}</button>
  </form>`;
}
