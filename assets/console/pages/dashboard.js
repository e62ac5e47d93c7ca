// Dashboard: the catalogue's totals, the low-stock list and recent movements (both live
// over stockChanged; the totals are read again after movements), the alert
// and upload queues, the instance's health.

import { html, useEffect, useRef, useState } from '../preact-htm.js';
import { gql, live } from '../api.js';
import { dateTime, money, number, t } from '../i18n.js';
import { ErrorLine, Loading, useLoad } from '../ui.js';

const MOVEMENT = 'id kind quantity balanceAfter createdAt reference product { id sku name stock lowStockThreshold isLowStock }';
const RECENT = 10;
const SUMMARY = 'products lowStock outOfStock unitsOnHand costedProducts stockValue';
// One scan of the catalogue (about 40 ms at 100,000 products) per open
// dashboard and interval, however many movements arrive meanwhile.
const SUMMARY_EVERY_MS = 5000;

const QUERY = `{
  currency
  summary: stockSummary { ${SUMMARY} }
  low: products(first: 50, filter: { lowStockOnly: true }, orderBy: { field: STOCK }) { nodes { id sku name stock lowStockThreshold } }
  recent: stockMovements(first: ${RECENT}) { nodes { ${MOVEMENT} } }
  health { status version uptimeSeconds
    database { status latencyMs }
    events { status crossInstance subscriptions subscriptionGroups }
    notifier { status reason telegramConfigured pending retrying sending dead }
    uploads { status reason queued processing oldestQueuedSeconds } }
}`;

export function Dashboard() {
  const { data, error, loading, setData } = useLoad(() => gql(QUERY), []);
  const [liveError, setLiveError] = useState(null);
  // The totals are read again (one scan) at most every SUMMARY_EVERY_MS
  // while movements arrive: a movement alone cannot tell whether its
  // product is new.
  const pending = useRef(null);
  const summaryLater = () => {
    if (pending.current) return;
    pending.current = setTimeout(() => {
      pending.current = null;
      gql(`{ stockSummary { ${SUMMARY} } }`).then(
        (r) => setData((d) => (d ? { ...d, summary: r.stockSummary } : d)),
        setLiveError,
      );
    }, SUMMARY_EVERY_MS);
  };
  useEffect(() => () => clearTimeout(pending.current), []);
  useEffect(
    () =>
      live(
        `subscription { stockChanged { movement { ${MOVEMENT} } } }`,
        {},
        ({ stockChanged: { movement } }) => {
          summaryLater();
          setData((d) => {
            if (!d) return d;
            const p = movement.product;
            const others = d.low.nodes.filter((n) => n.id !== p.id);
            const low = p.isLowStock
              ? [...others, { id: p.id, sku: p.sku, name: p.name, stock: p.stock, lowStockThreshold: p.lowStockThreshold }].sort((a, b) => a.stock - b.stock)
              : others;
            return {
              ...d,
              low: { nodes: low },
              recent: { nodes: [movement, ...d.recent.nodes.filter((m) => m.id !== movement.id)].slice(0, RECENT) },
            };
          });
        },
        { onError: setLiveError },
      ),
    [],
  );
  return html`<section>
    <h1>${t('nav.dashboard')}</h1>
    <${Loading} when=${loading && !data} />
    <${ErrorLine} error=${error || liveError} />
    ${data
      ? html`<div class="tiles">
            <div class="tile"><span>${t('dashboard.products')}</span><strong id="count-products">${number(data.summary.products)}</strong>
              <small>${t('dashboard.units', { n: number(data.summary.unitsOnHand) })}</small></div>
            <div class="tile"><span>${t('dashboard.value')}</span><strong id="stock-value">${money(data.summary.stockValue, data.currency)}</strong>
              <small>${t('dashboard.costed', { n: number(data.summary.costedProducts), of: number(data.summary.products) })}</small></div>
            <div class="tile"><span>${t('dashboard.lowStock')}</span><strong id="count-low">${number(data.summary.lowStock)}</strong>
              <small id="count-out">${t('dashboard.outOfStock', { n: number(data.summary.outOfStock) })}</small></div>
            <div class="tile"><span>${t('dashboard.alerts')}</span><strong>${number(data.health.notifier.pending + data.health.notifier.retrying)}</strong>
              <small>${t('dashboard.dead', { n: number(data.health.notifier.dead) })}</small></div>
            <div class="tile"><span>${t('dashboard.uploads')}</span><strong>${number(data.health.uploads.queued)}</strong>
              <small>${t('dashboard.processing', { n: number(data.health.uploads.processing) })}</small></div>
          </div>
          <div class="columns">
            <section aria-labelledby="low-title">
              <h2 id="low-title">${t('dashboard.lowList')}</h2>
              ${data.low.nodes.length === 0
                ? html`<p class="muted">${t('dashboard.noLow')}</p>`
                : html`<table id="low-stock"><thead><tr><th scope="col">${t('product.sku')}</th><th scope="col">${t('product.name')}</th><th scope="col" class="num">${t('product.stock')}</th><th scope="col" class="num">${t('product.threshold')}</th></tr></thead>
                  <tbody>${data.low.nodes.map(
                    (p) => html`<tr><td><a href=${`#/products/${p.id}`}>${p.sku}</a></td><td>${p.name}</td><td class="num">${number(p.stock)}</td><td class="num">${number(p.lowStockThreshold)}</td></tr>`,
                  )}</tbody></table>`}
            </section>
            <section aria-labelledby="recent-title">
              <h2 id="recent-title">${t('dashboard.recent')}</h2>
              <${MovementTable} id="recent-movements" movements=${data.recent.nodes} withProduct=${true} />
            </section>
          </div>
          <section aria-labelledby="health-title">
            <h2 id="health-title">${t('dashboard.health')}</h2>
            <dl class="health" id="health">
              <dt>${t('health.status')}</dt><dd class=${`status-${data.health.status}`}>${t(`status.${data.health.status}`)}</dd>
              <dt>${t('health.version')}</dt><dd>${data.health.version}</dd>
              <dt>${t('health.uptime')}</dt><dd>${t('health.seconds', { n: number(data.health.uptimeSeconds) })}</dd>
              <dt>${t('health.database')}</dt><dd>${t(`status.${data.health.database.status}`)} · ${number(data.health.database.latencyMs)} ms</dd>
              <dt>${t('health.events')}</dt><dd>${t(`status.${data.health.events.status}`)} · ${t('health.subscriptions', { n: number(data.health.events.subscriptions), g: number(data.health.events.subscriptionGroups) })}</dd>
              <dt>${t('health.notifier')}</dt><dd>${t(`status.${data.health.notifier.status}`)}${data.health.notifier.reason ? ` · ${data.health.notifier.reason}` : ''}</dd>
              <dt>${t('health.uploads')}</dt><dd>${t(`status.${data.health.uploads.status}`)}${data.health.uploads.reason ? ` · ${data.health.uploads.reason}` : ''}</dd>
            </dl>
          </section>`
      : null}
  </section>`;
}

/** Movements, newest first; `withProduct` adds the product's column. */
export function MovementTable({ id, movements, withProduct }) {
  if (!movements.length) return html`<p class="muted">${t('movement.none')}</p>`;
  return html`<table id=${id}>
    <thead><tr>
      <th scope="col">${t('movement.when')}</th>
      ${withProduct ? html`<th scope="col">${t('product.sku')}</th>` : null}
      <th scope="col">${t('movement.kind')}</th>
      <th scope="col" class="num">${t('movement.quantity')}</th>
      <th scope="col" class="num">${t('movement.balance')}</th>
      <th scope="col">${t('movement.reference')}</th>
    </tr></thead>
    <tbody>${movements.map(
      (m) => html`<tr data-movement=${m.id}>
        <td>${dateTime(m.createdAt)}</td>
        ${withProduct ? html`<td><a href=${`#/products/${m.product.id}`}>${m.product.sku}</a></td>` : null}
        <td>${t(`kind.${m.kind}`)}</td>
        <td class="num">${number(m.quantity)}</td>
        <td class="num">${number(m.balanceAfter)}</td>
        <td>${m.reference || ''}</td>
      </tr>`,
    )}</tbody>
  </table>`;
}
