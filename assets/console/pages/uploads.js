// Uploads: drop or pick a CSV or XLSX file, dry run or apply, then follow
// the job live (uploadJobUpdated) with its row errors; cancel; recent jobs.

import { html, useEffect, useState } from '../preact-htm.js';
import { gql, live } from '../api.js';
import { dateTime, number, t } from '../i18n.js';
import { ErrorLine, Field, Loading, useAction, useLoad } from '../ui.js';

const JOB = 'id kind filename status dryRun totalRows processedRows succeededRows failedRows error cancelRequested sizeBytes createdAt startedAt finishedAt errors(first: 50) { row column message }';
const FINISHED = ['COMPLETED', 'FAILED', 'CANCELLED'];

export function Uploads() {
  const [kind, setKind] = useState('PRODUCTS');
  const [dryRun, setDryRun] = useState(false);
  const [file, setFile] = useState(null);
  const [over, setOver] = useState(false);
  const [jobId, setJobId] = useState(null);
  const action = useAction();
  const jobs = useLoad(() => gql(`{ uploadJobs(first: 20) { nodes { ${JOB} } } }`).then((d) => d.uploadJobs.nodes), [jobId]);
  const drop = (e) => {
    e.preventDefault();
    setOver(false);
    if (e.dataTransfer.files.length) setFile(e.dataTransfer.files[0]);
  };
  const submit = async (e) => {
    e.preventDefault();
    if (!file) return;
    const job = await action.run(() =>
      gql('mutation ($kind: UploadKind!, $file: Upload!, $dry: Boolean) { createUploadJob(kind: $kind, file: $file, dryRun: $dry) { id } }', { kind, file: null, dry: dryRun }, { file }).then(
        (d) => d.createUploadJob,
      ),
    );
    if (job) setJobId(job.id);
  };
  return html`<section>
    <h1>${t('nav.uploads')}</h1>
    <form class="card" id="upload-form" onSubmit=${submit}>
      <div
        class=${`drop${over ? ' over' : ''}`}
        onDragOver=${(e) => { e.preventDefault(); setOver(true); }}
        onDragLeave=${() => setOver(false)}
        onDrop=${drop}
      >
        <p>${t('uploads.drop')}</p>
        <${Field} id="up-file" label=${t('uploads.file')}>
          <input id="up-file" type="file" accept=".csv,.xlsx,text/csv,application/vnd.openxmlformats-officedocument.spreadsheetml.sheet" onChange=${(e) => setFile(e.target.files[0] || null)} />
        <//>
        ${file ? html`<p id="up-chosen">${file.name} · ${t('uploads.bytes', { n: number(file.size) })}</p>` : null}
      </div>
      <${Field} id="up-kind" label=${t('uploads.kind')}>
        <select id="up-kind" value=${kind} onChange=${(e) => setKind(e.target.value)}>
          <option value="PRODUCTS">${t('uploads.kind.PRODUCTS')}</option>
          <option value="STOCK_MOVEMENTS">${t('uploads.kind.STOCK_MOVEMENTS')}</option>
        </select>
      <//>
      <label class="check"><input type="checkbox" id="up-dry" checked=${dryRun} onChange=${(e) => setDryRun(e.target.checked)} /> ${t('uploads.dryRun')}</label>
      <${ErrorLine} error=${action.error} />
      <button type="submit" id="upload-submit" disabled=${!file || action.busy}>${t('uploads.submit')}</button>
    </form>
    ${jobId ? html`<${Job} key=${jobId} id=${jobId} onFinished=${jobs.reload} />` : null}
    <section aria-labelledby="jobs-title">
      <h2 id="jobs-title">${t('uploads.recent')}</h2>
      <${ErrorLine} error=${jobs.error} />
      <${Loading} when=${jobs.loading && !jobs.data} />
      ${jobs.data
        ? html`<table id="upload-jobs"><thead><tr>
            <th scope="col">${t('uploads.file')}</th><th scope="col">${t('uploads.kind')}</th><th scope="col">${t('uploads.status')}</th>
            <th scope="col" class="num">${t('uploads.rows')}</th><th scope="col">${t('uploads.created')}</th></tr></thead>
            <tbody>${jobs.data.map(
              (j) => html`<tr><td><button type="button" class="link" onClick=${() => setJobId(j.id)}>${j.filename}</button>${j.dryRun ? ` (${t('uploads.dryRun')})` : ''}</td>
                <td>${t(`uploads.kind.${j.kind}`)}</td><td>${t(`upload.${j.status}`)}</td>
                <td class="num">${number(j.succeededRows)} / ${number(j.totalRows)}</td><td>${dateTime(j.createdAt)}</td></tr>`,
            )}</tbody></table>`
        : null}
    </section>
  </section>`;
}

/** One job, live until it finishes. */
function Job({ id, onFinished }) {
  const [job, setJob] = useState(null);
  const [error, setError] = useState(null);
  const cancel = useAction();
  useEffect(
    () =>
      live(
        `subscription ($id: ID!) { uploadJobUpdated(id: $id) { ${JOB} } }`,
        { id },
        ({ uploadJobUpdated }) => {
          setJob(uploadJobUpdated);
          if (FINISHED.includes(uploadJobUpdated.status)) onFinished();
        },
        { onError: setError },
      ),
    [id],
  );
  if (!job) return html`<${ErrorLine} error=${error} />`;
  const total = job.totalRows || 0;
  const done = FINISHED.includes(job.status);
  return html`<section class="card" id="upload-job" aria-live="polite" data-status=${job.status}>
    <h2>${job.filename}${job.dryRun ? ` (${t('uploads.dryRun')})` : ''}</h2>
    <p><span id="upload-status">${t(`upload.${job.status}`)}</span>${job.cancelRequested && !done ? ` · ${t('uploads.cancelling')}` : ''}</p>
    <progress max=${total || 1} value=${job.processedRows} aria-label=${t('uploads.progress')}></progress>
    <p>${t('uploads.counts', { processed: number(job.processedRows), total: number(total), ok: number(job.succeededRows), failed: number(job.failedRows) })}</p>
    ${job.error ? html`<p class="error" role="alert">${job.error}</p>` : null}
    ${job.errors.length
      ? html`<table id="upload-errors"><caption>${t('uploads.rowErrors')}</caption><thead><tr><th scope="col" class="num">${t('uploads.row')}</th><th scope="col">${t('uploads.column')}</th><th scope="col">${t('uploads.message')}</th></tr></thead>
          <tbody>${job.errors.map((e) => html`<tr><td class="num">${e.row}</td><td>${e.column || ''}</td><td>${e.message}</td></tr>`)}</tbody></table>`
      : null}
    <${ErrorLine} error=${error || cancel.error} />
    ${done
      ? null
      : html`<button type="button" class="danger" id="upload-cancel" disabled=${cancel.busy || job.cancelRequested}
          onClick=${() => cancel.run(() => gql('mutation ($id: ID!) { cancelUploadJob(id: $id) { id status cancelRequested } }', { id }))}>${t('common.cancel')}</button>`}
  </section>`;
}
