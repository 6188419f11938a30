/* app.js - loratune's web interface: one script, no framework, talking to the REST API of
 * the server that served it (docs/SERVER.md). The path names the page (/data, /train, /queue,
 * /runs, /models, /deployments, /tune, /compare, /playground); links are followed in place (history.pushState) and every page is drawn
 * from the API's answers. Job progress comes from the job's Server-Sent Events, read with
 * fetch so a token can be sent (EventSource cannot send headers). Charts: Chart.js 3.
 * window.lt.charts holds the live charts (the browser tests read their points). */
'use strict';

const lt = { charts: {}, drawn: [], timers: [], streams: [], token: sessionStorage.getItem('lt-token') || '' };
window.lt = lt;
const $ = (sel, root = document) => root.querySelector(sel);

/* ---- small helpers --------------------------------------------------------------------- */
function el(tag, attrs = {}, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === 'class') e.className = v;
    else if (k === 'text') e.textContent = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? '' : v);
  }
  for (const k of kids.flat()) if (k !== null && k !== undefined) e.append(k.nodeType ? k : String(k));
  return e;
}
function bytes(n) {
  if (n === null || n === undefined) return '';
  const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : n) + ' ' + u[i];
}
function dur(s) {
  if (s === null || s === undefined || !isFinite(s)) return '';
  s = Math.round(s);
  const h = Math.floor(s / 3600), m = Math.floor(s % 3600 / 60), r = s % 60;
  return h ? `${h}h ${m}m` : m ? `${m}m ${r}s` : `${r}s`;
}
function num(v, d = 4) { return typeof v === 'number' ? (Math.abs(v) >= 1e4 || (v && Math.abs(v) < 1e-3) ? v.toExponential(2) : +v.toFixed(d)) : (v ?? ''); }
function when(t) { return t ? new Date(t * 1000).toLocaleString() : ''; }
function errorBox(msg) { return el('div', { class: 'error', role: 'alert', text: msg }); }

/* ---- the API --------------------------------------------------------------------------- */
class ApiError extends Error {
  constructor(status, code, message) { super(message); this.status = status; this.code = code; }
}
function headers(extra = {}) {
  const h = { ...extra };
  if (lt.token) h.Authorization = 'Bearer ' + lt.token;
  return h;
}
async function api(method, path, body) {
  const opt = { method, headers: headers() };
  if (body !== undefined) { opt.headers['Content-Type'] = 'application/json'; opt.body = JSON.stringify(body); }
  const r = await fetch(path, opt);
  const text = await r.text();
  let j = null;
  try { j = text ? JSON.parse(text) : null; } catch (e) { /* not JSON */ }
  if (!r.ok) {
    if (r.status === 401) askToken();
    const e = j && j.error ? j.error : { code: 'http_' + r.status, message: text || r.statusText };
    throw new ApiError(r.status, e.code, e.message);
  }
  return j;
}
function askToken() {
  const box = $('#auth');
  box.hidden = false;
  $('#token').focus();
}
$('#auth-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  lt.token = $('#token').value;
  sessionStorage.setItem('lt-token', lt.token);
  $('#auth').hidden = true;
  show(location.pathname + location.search);
});

/* Reads a job's Server-Sent Events with fetch; onEvent(kind, data) per event. Returns a
 * handle whose abort() stops it (pages stop theirs when left). */
function followEvents(jobId, onEvent, onEnd) {
  const ctl = new AbortController();
  lt.streams.push(ctl);
  (async () => {
    try {
      const r = await fetch(`/api/jobs/${jobId}/events`, { headers: headers(), signal: ctl.signal });
      if (!r.ok) throw new ApiError(r.status, 'http', `events: HTTP ${r.status}`);
      const rd = r.body.getReader();
      const dec = new TextDecoder();
      let buf = '';
      for (;;) {
        const { value, done } = await rd.read();
        if (done) break;
        buf += dec.decode(value, { stream: true });
        let k;
        while ((k = buf.indexOf('\n\n')) >= 0) {
          const block = buf.slice(0, k);
          buf = buf.slice(k + 2);
          let kind = 'message';
          const data = [];
          for (const line of block.split('\n')) {
            if (line.startsWith('event:')) kind = line.slice(6).trim();
            else if (line.startsWith('data:')) data.push(line.slice(5).replace(/^ /, ''));
          }
          if (!data.length) continue;
          let d;
          try { d = JSON.parse(data.join('\n')); } catch (e) { continue; }
          onEvent(kind, d);
        }
      }
      if (onEnd) onEnd(null);
    } catch (e) {
      if (e.name !== 'AbortError' && onEnd) onEnd(e);
    }
  })();
  return ctl;
}

/* ---- charts ---------------------------------------------------------------------------- */
const COLORS = ['#2457c5', '#d9480f', '#2b8a3e', '#862e9c', '#e67700', '#0b7285', '#c2255c', '#5c940d'];
function lineChart(canvas, title, series, opts = {}) {
  if (!window.Chart) return null;
  const css = getComputedStyle(document.body);
  const fg = css.color;
  const grid = css.getPropertyValue('--line').trim() || '#ddd';
  return new Chart(canvas, {
    type: 'line',
    data: { datasets: series.map((s, i) => ({
      label: s, data: [], borderColor: COLORS[i % COLORS.length], backgroundColor: COLORS[i % COLORS.length],
      pointRadius: opts.points ?? 2, borderWidth: 2, tension: 0, spanGaps: true })) },
    options: {
      animation: false, maintainAspectRatio: false, parsing: false, normalized: true,
      interaction: { mode: 'nearest', intersect: false },
      scales: {
        x: { type: 'linear', title: { display: true, text: opts.x || 'step', color: fg }, ticks: { color: fg }, grid: { color: grid } },
        y: { type: opts.log ? 'logarithmic' : 'linear', ticks: { color: fg }, grid: { color: grid },
             title: { display: !!opts.y, text: opts.y || '', color: fg } },
      },
      plugins: { title: { display: true, text: title, color: fg }, legend: { labels: { color: fg } } },
    },
  });
}
function chartBox(id, label) {
  const c = el('canvas', { id, role: 'img', 'aria-label': label });
  return [el('div', { class: 'chart card' }, c), c];
}

/* ---- the pages ------------------------------------------------------------------------- */
const pages = { data: pageData, train: pageTrain, queue: pageQueue, runs: pageRuns, models: pageModels,
  tune: pageTune, compare: pageCompare, playground: pagePlayground, deployments: pageDeployments };

function leave() {
  for (const t of lt.timers) clearInterval(t);
  for (const s of lt.streams) s.abort();
  for (const c of Object.values(lt.charts)) c && c.destroy();
  lt.timers = []; lt.streams = []; lt.charts = {}; lt.drawn = [];
}
async function show(url, push) {
  if (push) history.pushState(null, '', url);
  leave();
  const u = new URL(url, location.origin);
  let name = u.pathname.replace(/^\//, '') || 'data';
  if (!pages[name]) name = 'data';
  for (const a of document.querySelectorAll('nav a'))
    if (a.dataset.page === name) a.setAttribute('aria-current', 'page'); else a.removeAttribute('aria-current');
  const main = $('#main');
  main.replaceChildren();
  document.title = `loratune: ${name}`;
  try {
    await pages[name](main, u.searchParams);
  } catch (e) {
    main.append(errorBox(e.message));
  }
}
/* A download link sends no Authorization header: with a token, fetch it and hand the bytes
 * to the browser. */
async function downloadWithToken(a) {
  try {
    const r = await fetch(a.href, { headers: headers() });
    if (!r.ok) throw new Error(`HTTP ${r.status}`);
    const url = URL.createObjectURL(await r.blob());
    const name = /filename="([^"]+)"/.exec(r.headers.get('Content-Disposition') || '');
    const t = el('a', { href: url, download: name ? name[1] : 'download' });
    document.body.append(t); t.click(); t.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60000);
  } catch (e) { a.after(errorBox('download failed: ' + e.message)); }
}
document.addEventListener('click', (ev) => {
  const a = ev.target.closest('a');
  if (a && a.hasAttribute('download') && lt.token) { ev.preventDefault(); downloadWithToken(a); return; }
  if (!a || a.target || a.hasAttribute('download') || ev.ctrlKey || ev.metaKey || ev.shiftKey) return;
  const u = new URL(a.href, location.href);
  if (u.origin !== location.origin || u.pathname.startsWith('/api/') || !pages[u.pathname.slice(1)]) return;
  ev.preventDefault();
  show(u.pathname + u.search, true).then(() => $('#main').focus());
});
window.addEventListener('popstate', () => show(location.pathname + location.search));

/* -- Data: upload with progress, validation errors at their line, preview, the list -- */
async function pageData(main) {
  const file = el('input', { id: 'file', type: 'file', accept: '.jsonl,.json,.ndjson,application/json', 'aria-describedby': 'file-help' });
  const up = el('button', { id: 'upload', type: 'submit' }, 'Upload');
  const prog = el('progress', { id: 'upload-progress', max: 100, value: 0, hidden: true, 'aria-label': 'Upload progress' });
  const result = el('div', { id: 'upload-result', 'aria-live': 'polite' });
  const form = el('form', { class: 'card' },
    el('label', { for: 'file' }, 'Dataset file'), file,
    el('p', { class: 'help', id: 'file-help' },
      'JSONL (one example per line: messages, prompt/completion or text) or a JSON array. Streamed to the server; checked as `loratune data check` checks it.'),
    el('div', { class: 'row' }, up), prog, result);
  const list = el('div', { id: 'datasets' });
  main.append(el('h1', {}, 'Data'), form, el('h2', {}, 'Datasets'), list);

  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const f = file.files[0];
    if (!f) { result.replaceChildren(errorBox('Choose a file first.')); file.focus(); return; }
    up.disabled = true; prog.hidden = false; prog.value = 0;
    result.replaceChildren(el('p', { class: 'muted' }, `Uploading ${f.name} (${bytes(f.size)})…`));
    try {
      const ds = await uploadFile(f, (p) => { prog.value = p; });
      prog.value = 100;
      await showDataset(result, ds, f);
      await listDatasets(list);
    } catch (e) {
      result.replaceChildren(errorBox('Upload failed: ' + e.message));
    } finally { up.disabled = false; }
  });
  await listDatasets(list);
}
function uploadFile(f, onProgress) {
  return new Promise((resolve, reject) => {
    const x = new XMLHttpRequest();
    x.open('POST', '/api/datasets?name=' + encodeURIComponent(f.name));
    x.setRequestHeader('Content-Type', 'application/octet-stream');
    if (lt.token) x.setRequestHeader('Authorization', 'Bearer ' + lt.token);
    x.upload.onprogress = (e) => { if (e.lengthComputable) onProgress(100 * e.loaded / e.total); };
    x.onload = () => {
      let j = null;
      try { j = JSON.parse(x.responseText); } catch (e) { /* not JSON */ }
      if (x.status === 201 && j) resolve(j);
      else {
        if (x.status === 401) askToken();
        reject(new Error(j && j.error ? j.error.message : `HTTP ${x.status}`));
      }
    };
    x.onerror = () => reject(new Error('network error'));
    x.send(f);
  });
}
/* The first lines of the file, and those around a bad line, with their numbers. */
async function previewLines(f, badLine, msg) {
  const text = await f.slice(0, 1 << 20).text();
  const lines = text.split('\n');
  if (f.size > 1 << 20) lines.pop(); /* cut mid-line */
  const box = el('div', { class: 'lines', id: 'preview', role: 'region', 'aria-label': 'File preview', tabindex: '0' });
  const show = new Set();
  for (let i = 1; i <= Math.min(5, lines.length); i++) show.add(i);
  if (badLine) for (let i = Math.max(1, badLine - 2); i <= Math.min(lines.length, badLine + 2); i++) show.add(i);
  let prev = 0;
  for (const n of [...show].sort((a, b) => a - b)) {
    if (n > lines.length || (n === lines.length && lines[n - 1] === '')) continue;
    if (prev && n > prev + 1) box.append(el('div', {}, el('span', { class: 'n' }, '…')));
    const t = lines[n - 1].length > 400 ? lines[n - 1].slice(0, 400) + ' …' : lines[n - 1];
    box.append(el('div', { class: n === badLine ? 'bad' : null, id: n === badLine ? 'bad-line' : null },
      el('span', { class: 'n' }, n), el('span', {}, t)));
    if (n === badLine && msg) box.append(el('div', { class: 'msg' }, '↑ ' + msg));
    prev = n;
  }
  return box;
}
async function showDataset(box, ds, f) {
  const v = ds.validation;
  const kids = [el('p', {}, el('b', {}, ds.name), ` · ${bytes(ds.size)} · `, el('code', {}, ds.id))];
  let bad = null;
  if (!v) kids.push(el('p', { class: 'muted' }, 'Large upload: not checked yet (validate it from the list).'));
  else if (v.ok) {
    const t = v.splits && v.splits.train;
    kids.push(el('p', { class: 'ok', id: 'valid-ok' }, `Valid: ${v.format || ''} · ${t ? t.examples : '?'} training examples` +
      (v.splits && v.splits.valid ? ` · ${v.splits.valid.examples} validation examples` : '')));
  } else {
    for (const e of v.errors || []) {
      kids.push(el('div', { class: 'error validation-error', role: 'alert', 'data-line': e.line ?? '' },
        e.line ? el('b', {}, `Line ${e.line}: `) : null, e.message));
      if (e.line && !bad) bad = e;
    }
  }
  if (f) kids.push(el('h2', {}, 'Preview'), await previewLines(f, bad && bad.line, bad && bad.message));
  box.replaceChildren(...kids);
}
async function listDatasets(box) {
  const r = await api('GET', '/api/datasets');
  if (!r.datasets.length) { box.replaceChildren(el('p', { class: 'muted' }, 'No datasets yet.')); return; }
  const models = (await api('GET', '/api/models')).models;
  const rows = r.datasets.map((d) => {
    const v = d.validation;
    const state = !v ? 'not checked' : v.ok ? `ok · ${v.splits?.train?.examples ?? '?'} examples` : `line ${v.errors?.[0]?.line ?? '?'}: error`;
    const out = el('td', { 'aria-live': 'polite' });
    const sel = el('select', { 'aria-label': `Model to tokenize ${d.name} with` },
      el('option', { value: '' }, 'structure only'), models.map((m) => el('option', { value: m.name }, m.name)));
    const check = el('button', { class: 'secondary', type: 'button', onclick: async () => {
      check.disabled = true;
      try {
        const body = sel.value ? { model: sel.value } : {};
        const res = await api('POST', `/api/datasets/${d.id}/validate`, body);
        out.replaceChildren(res.ok ? statsTable(res) : errorBox((res.errors || []).map((e) => `line ${e.line}: ${e.message}`).join('\n')));
      } catch (e) { out.replaceChildren(errorBox(e.message)); } finally { check.disabled = false; }
    } }, 'Validate');
    const prev = el('button', { class: 'secondary preview-btn', type: 'button', 'data-dataset': d.id, onclick: async () => {
      if (!sel.value) { out.replaceChildren(errorBox('Choose a model to preview with: the records are rendered with its chat template.')); sel.focus(); return; }
      prev.disabled = true;
      try {
        const body = { model: sel.value, records: 5 };
        if (seq.value) body['max-seq-len'] = +seq.value;
        const res = await api('POST', `/api/datasets/${d.id}/preview`, body);
        out.replaceChildren();
        pv.replaceChildren(...(res.ok ? previewView(d, res) : [errorBox((res.errors || []).map((e) => (e.line ? `line ${e.line}: ` : '') + e.message).join('\n'))]));
        pv.scrollIntoView({ block: 'nearest' });
      } catch (e) { out.replaceChildren(errorBox(e.message)); } finally { prev.disabled = false; }
    } }, 'Preview');
    const seq = el('input', { type: 'number', min: 2, placeholder: '2048', class: 'seq', 'aria-label': `max-seq-len for ${d.name}'s token statistics` });
    const ver = d.version;
    const nVer = r.datasets.filter((o) => o.name === d.name).length;
    const del = (all) => el('button', { class: all ? 'danger delete-all' : 'danger delete', type: 'button', 'data-dataset': d.id, onclick: async (ev) => {
      const what = all ? `all ${nVer} versions of ${d.name}` : `${d.name} (${d.id}${ver ? ', v' + ver.number : ''})`;
      if (!window.confirm(`Delete ${what}? Its file and its cached copy go (a copy a finished job's run still names stays).`)) return;
      ev.target.disabled = true;
      try {
        const res = await api('DELETE', `/api/datasets/${d.id}${all ? '?all_versions=true' : ''}`);
        box.dataset.deleted = res.deleted.join(' ');
        await listDatasets(box);
        box.prepend(el('p', { class: 'ok', 'aria-live': 'polite' }, `Deleted ${res.deleted.length} upload${res.deleted.length > 1 ? 's' : ''}, ${bytes(res.freed_bytes)} freed.`));
      } catch (e) { out.replaceChildren(errorBox(e.message)); ev.target.disabled = false; }
    } }, all ? `Delete all ${nVer} versions` : 'Delete');
    return el('tr', { 'data-dataset': d.id },
      el('td', {}, el('b', {}, d.name), el('br'), el('code', { class: 'muted' }, d.id),
        ver ? el('div', { class: 'muted version', title: `md5 ${ver.md5} · ${ver.dvc_file}` },
          `v${ver.number}${ver.number > 1 ? (ver.changed ? ' (changed)' : ' (same content)') : ''} · md5 `, el('code', {}, ver.md5.slice(0, 8))) : null),
      el('td', {}, bytes(d.size)), el('td', { class: v && !v.ok ? 'status-failed' : '' }, state),
      el('td', {}, el('div', { class: 'row' }, sel, seq, check, prev), out),
      el('td', {}, v && v.ok ? el('a', { href: `/train?dataset=${d.id}` }, 'Train') : '', el('div', { class: 'row' }, del(false), nVer > 1 ? del(true) : null)));
  });
  const pv = el('div', { id: 'ds-preview', 'aria-live': 'polite' });
  box.replaceChildren(el('p', { class: 'muted' }, `${bytes(r.used_bytes)} of ${bytes(r.quota_bytes)} used`),
    el('div', { class: 'table-wrap card' }, el('table', {},
      el('thead', {}, el('tr', {}, ['dataset', 'size', 'check', 'validate / preview', ''].map((h) => el('th', { scope: 'col' }, h)))),
      el('tbody', {}, rows))), pv);
}
/* A preview: token statistics per split and the first records as the model sees them, the
 * tokens it learns from (the loss mask) highlighted. */
function previewView(d, res) {
  const cols = ['split', 'examples', 'min', 'median', 'p95', 'max', 'mean', `over ${res.max_seq_len}`, 'tokens cut'];
  const rows = Object.entries(res.stats).map(([k, s]) => el('tr', { 'data-split': k },
    el('th', { scope: 'row' }, k), [s.examples, s.min, s.median, s.p95, s.max, num(s.mean, 1), s.over_max_seq_len, s.tokens_cut]
      .map((x, i) => el('td', { 'data-label': cols[i + 1] }, x ?? ''))));
  const recs = res.records.map((r) => el('div', { class: 'card record', 'data-line': r.line },
    el('p', { class: 'muted' }, `Line ${r.line} · ${r.split} · ${r.tokens} tokens` + (r.truncated ? ` · truncated to ${r.tokens_kept}` : '') +
      ` · ${r.loss_tokens} trained` + (r.tokens_shown < r.tokens_kept ? ` · first ${r.tokens_shown} shown` : '')),
    el('pre', { class: 'rendered', tabindex: '0', 'aria-label': `line ${r.line} rendered with the chat template` },
      r.segments.map((g) => el('span', { class: g.loss ? 'loss' : null }, g.text)))));
  return [el('h2', {}, `Preview of ${d.name} with ${res.model}`),
    el('p', { class: 'muted' }, `${res.format} · template ${res.template ? res.template.name + (res.template.exact ? '' : ' (guessed)') : 'none'} · ` +
      'token counts per record before truncation · ', el('span', { class: 'loss' }, 'highlighted'), ': the tokens it learns from'),
    el('div', { class: 'table-wrap card' }, el('table', { class: 'stack', id: 'token-stats' },
      el('thead', {}, el('tr', {}, cols.map((h) => el('th', { scope: 'col' }, h)))), el('tbody', {}, rows))),
    el('p', { id: 'suggested' }, 'Suggested max-seq-len: ', el('b', {}, res.suggested_max_seq_len ?? '–'),
      el('span', { class: 'muted' }, ' (holds every record, or the 95th percentile when a few are far longer)')),
    res.suggested_rank ? el('p', { id: 'suggested-rank' }, 'Suggested LoRA rank: ', el('b', {}, res.suggested_rank.rank),
      el('span', { class: 'muted' }, ` (${res.suggested_rank.reason})`)) : null,
    ...recs];
}
function statsTable(v) {
  const rows = Object.entries(v.splits || {}).map(([k, s]) => el('tr', {},
    el('th', { scope: 'row' }, k), el('td', {}, s.examples), el('td', {}, `${s.min_len}/${num(s.mean_len, 1)}/${s.max_len} ${s.unit || ''}`),
    el('td', {}, s.tokens ?? ''), el('td', {}, s.truncated ?? '')));
  return el('table', {}, el('thead', {}, el('tr', {}, ['split', 'examples', 'min/mean/max', 'tokens', 'truncated'].map((h) => el('th', { scope: 'col' }, h)))),
    el('tbody', {}, rows));
}

/* -- Train: the form from the option table, then the live view -- */
const COMMON = ['method', 'iters', 'epochs', 'lr', 'batch-size', 'max-seq-len', 'lora-rank', 'lora-alpha',
  'lora-targets', 'lr-schedule', 'warmup', 'valid-fraction', 'eval-every', 'save-every', 'seed'];
async function pageTrain(main, q) {
  if (q.get('job')) return jobView(main, q.get('job'));
  const [opts, dss, models] = await Promise.all([api('GET', '/api/options'), api('GET', '/api/datasets'), api('GET', '/api/models')]);
  const okDs = dss.datasets.filter((d) => !d.validation || d.validation.ok);
  const dsSel = el('select', { id: 'dataset', required: true },
    okDs.map((d) => el('option', { value: d.id, selected: d.id === q.get('dataset') }, `${d.name} (${d.id})`)));
  const mSel = el('select', { id: 'model', required: true }, models.models.map((m) => el('option', { value: m.name }, `${m.name} · ${bytes(m.size)}`)));
  const name = el('input', { id: 'job-name', type: 'text', placeholder: 'optional' });
  const common = el('div', { class: 'opts' }), rest = el('div', { class: 'opts' });
  const fields = [];
  const table = opts.options.filter((o) => !o.server);
  const byName = Object.fromEntries(table.map((o) => [o.name, o]));
  for (const n of COMMON) if (byName[n]) common.append(optField(byName[n], fields));
  for (const o of table) if (!COMMON.includes(o.name)) rest.append(optField(o, fields));
  const go = el('button', { id: 'start', type: 'submit' }, 'Start training');
  const msg = el('div', { id: 'train-msg', 'aria-live': 'polite' });
  const plan = el('div', { id: 'plan', 'aria-live': 'polite', class: 'plan' });
  const form = el('form', { class: 'card', novalidate: true },
    el('div', { class: 'row' },
      el('div', {}, el('label', { for: 'dataset' }, 'Dataset'), dsSel),
      el('div', {}, el('label', { for: 'model' }, 'Model'), mSel),
      el('div', {}, el('label', { for: 'job-name' }, 'Job name'), name)),
    el('h2', {}, 'Options'), el('p', { class: 'help' }, 'Empty fields keep their default (shown greyed). Names are those of `loratune train --help`.'),
    common, el('details', {}, el('summary', {}, `All options (${table.length - common.children.length} more)`), rest),
    el('h2', {}, 'Memory estimate'), plan,
    el('div', { class: 'row' }, go), msg);
  main.append(el('h1', {}, 'Train'));
  if (!okDs.length) main.append(el('p', {}, 'No valid dataset yet: ', el('a', { href: '/data' }, 'upload one'), '.'));
  main.append(form);
  const collect = () => {
    const options = {};
    for (const f of fields) {
      const v = f.get();
      if (v !== undefined) options[f.name] = v;
    }
    return options;
  };
  /* the plan of these options (POST /api/plan), redone a moment after each change */
  let planSeq = 0, planTimer = null;
  const estimate = async () => {
    const seq = ++planSeq;
    if (!mSel.value) return;
    try {
      const p = await api('POST', '/api/plan', { model: mSel.value, options: collect() });
      if (seq !== planSeq) return;
      plan.dataset.peak = p.peak_bytes;
      const sizes = `batch ${p.batch_size}${p.auto_batch_size ? ' (auto)' : ''} × ${p.seq_len} tokens${p.auto_max_seq_len ? ' (auto)' : ''}`;
      plan.replaceChildren(el('p', {}, 'Planned peak memory ', el('b', { id: 'plan-peak' }, bytes(p.peak_bytes)),
        p.budget_bytes ? ` of a ${bytes(p.budget_bytes)} budget` : '', ` · ${sizes} · ${p.n_trainable.toLocaleString('en-US')} trainable parameters · ${p.compute_dtype} products`),
        el('p', { class: 'help' }, Object.entries(p.bytes).map(([k, b]) => `${k} ${bytes(b)}`).join(' · ')),
        ...(p.notes || []).map((n) => el('p', { class: 'help' }, n)));
    } catch (e) {
      if (seq !== planSeq) return;
      delete plan.dataset.peak;
      plan.replaceChildren(errorBox(e.message));
    }
  };
  form.addEventListener('input', () => { clearTimeout(planTimer); planTimer = setTimeout(estimate, 400); });
  form.addEventListener('change', () => { clearTimeout(planTimer); planTimer = setTimeout(estimate, 100); });
  estimate();
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const options = {};
    for (const f of fields) {
      const v = f.get();
      if (v !== undefined) options[f.name] = v;
    }
    const body = { dataset: dsSel.value, model: mSel.value, options };
    if (name.value.trim()) body.name = name.value.trim();
    go.disabled = true;
    try {
      const job = await api('POST', '/api/jobs', body);
      await show(`/train?job=${job.id}`, true);
    } catch (e) {
      const m = /^([a-z0-9-]+)[: ]/.exec(e.message);
      const field = m && fields.find((f) => f.name === m[1]);
      msg.replaceChildren(errorBox(e.message));
      if (field) { field.input.setAttribute('aria-invalid', 'true'); field.input.focus(); }
    } finally { go.disabled = false; }
  });
}
function optField(o, fields) {
  const id = 'opt-' + o.name;
  const helpId = id + '-help';
  const def = o.default ?? '';
  let input, get;
  if (o.type === 'bool') {
    input = el('input', { id, type: 'checkbox', checked: def === 'true' || def === '1', 'aria-describedby': helpId });
    const d = input.checked;
    get = () => (input.checked === d ? undefined : input.checked);
    fields.push({ name: o.name, input, get });
    return el('div', { class: 'opt check' }, el('label', { for: id }, input, o.name), el('p', { class: 'help', id: helpId }, o.help));
  }
  if (o.type === 'enum' && o.choices) {
    input = el('select', { id, 'aria-describedby': helpId }, o.choices.map((c) => el('option', { value: c, selected: c === def }, c)));
    get = () => (input.value === def ? undefined : input.value);
  } else {
    const numeric = ['int', 'float', 'size'].includes(o.type);
    input = el('input', { id, type: 'text', placeholder: def === '' ? (o.auto ? 'auto' : '') : def, inputmode: numeric && !o.auto ? 'decimal' : null,
      'aria-describedby': helpId, name: o.name });
    get = () => {
      const v = input.value.trim();
      if (v === '') return undefined;
      if (o.type === 'int' && /^-?\d+$/.test(v)) return parseInt(v, 10);
      if (o.type === 'float' && /^-?[\d.]+(e-?\d+)?$/i.test(v)) return parseFloat(v);
      return v;
    };
  }
  fields.push({ name: o.name, input, get });
  const range = o.min !== undefined ? ` (${o.min}${o.max !== undefined ? '…' + o.max : '…'})` : '';
  return el('div', { class: 'opt' }, el('label', { for: id }, o.name), input, el('p', { class: 'help', id: helpId }, o.help + (['int', 'float'].includes(o.type) ? range : '')));
}

/* The live view of one job: status, ETA, loss / validation loss / lr / tokens/s / memory. */
async function jobView(main, id) {
  const job = await api('GET', `/api/jobs/${id}`);
  const status = el('b', { id: 'job-status' }, job.status);
  const step = el('b', { id: 'job-step' }, '');
  const loss = el('b', {}, ''), vloss = el('b', {}, ''), eta = el('b', { id: 'job-eta' }, ''), tps = el('b', {}, ''), mem = el('b', {}, '');
  const actions = el('div', { class: 'row' });
  const log = el('div', { id: 'job-log', 'aria-live': 'polite' });
  const [c1, k1] = chartBox('chart-loss', 'training and validation loss by step');
  const [c2, k2] = chartBox('chart-lr', 'learning rate by step');
  const [c3, k3] = chartBox('chart-tps', 'tokens per second by step');
  const [c4, k4] = chartBox('chart-mem', 'peak memory by step');
  main.append(el('h1', {}, 'Job ', el('code', {}, id), job.name ? ` · ${job.name}` : ''),
    el('div', { class: 'card' }, el('div', { class: 'stats' },
      el('span', {}, 'status ', status), el('span', {}, 'step ', step), el('span', {}, 'loss ', loss),
      el('span', {}, 'val loss ', vloss), el('span', {}, 'tokens/s ', tps), el('span', {}, 'memory ', mem), el('span', {}, 'ETA ', eta),
      job.data_version ? el('span', { id: 'job-data', title: `md5 ${job.data_version.md5} · ${job.data_version.dvc_file || ''}` },
        'data ', el('b', {}, `v${job.data_version.number ?? '?'} · ${job.data_version.md5.slice(0, 8)}`)) : null),
    actions, log),
    el('div', { class: 'charts' }, c1, c2, c3, c4));
  lt.charts.loss = lineChart(k1, 'Loss', ['train loss', 'validation loss']);
  lt.charts.lr = lineChart(k2, 'Learning rate', ['lr'], { points: 0 });
  lt.charts.tps = lineChart(k3, 'Throughput', ['tokens/s'], { points: 0 });
  lt.charts.mem = lineChart(k4, 'Peak memory (MiB)', ['peak RSS'], { points: 0 });
  let total = job.total_steps || 0;
  const setActions = (st) => {
    actions.replaceChildren();
    if (!['done', 'failed', 'cancelled', 'interrupted'].includes(st))
      actions.append(el('button', { class: 'secondary', type: 'button', onclick: async () => {
        try { await api('POST', `/api/jobs/${id}/cancel`); } catch (e) { log.append(errorBox(e.message)); }
      } }, 'Cancel'));
    if (st === 'done') actions.append(el('a', { class: 'btn', id: 'download', href: `/api/jobs/${id}/adapter/adapter.zip`, download: '' }, 'Download adapter (.zip)'));
    if (st === 'interrupted' || st === 'cancelled')
      actions.append(el('button', { type: 'button', onclick: async () => {
        try { await api('POST', `/api/jobs/${id}/resume`); show(`/train?job=${id}`); } catch (e) { log.append(errorBox(e.message)); }
      } }, 'Resume'));
  };
  setActions(job.status);
  let pending = false;
  const redraw = () => {
    if (pending) return;
    pending = true;
    requestAnimationFrame(() => {
      pending = false;
      for (const c of Object.values(lt.charts)) c && c.update('none');
      if (lt.charts.loss) lt.drawn.push(lt.charts.loss.data.datasets[0].data.length); /* read by the tests */
    });
  };
  followEvents(id, (kind, d) => {
    if (kind === 'job') {
      health();
      status.textContent = d.status;
      status.className = 'status-' + d.status;
      setActions(d.status);
      if (d.message) log.append(d.status === 'failed' ? errorBox(d.message) : el('p', { class: 'muted' }, d.message));
      if (d.status === 'done') eta.textContent = '0s';
    } else if (d.event === 'start') {
      total = d.steps || total;
      if (d.planned_peak_bytes) log.append(el('p', { class: 'muted' }, `planned peak memory ${bytes(d.planned_peak_bytes)}`));
    } else if (d.event === 'stage') {
      log.replaceChildren(el('p', { class: 'muted' }, `stage: ${d.stage}`));
    } else if (d.event === 'step') {
      step.textContent = total ? `${d.step} / ${total}` : d.step;
      loss.textContent = num(d.loss);
      tps.textContent = Math.round(d.tokens_per_sec).toLocaleString('en-US');
      mem.textContent = bytes(d.peak_rss_bytes);
      eta.textContent = dur(d.eta_s);
      if (lt.charts.loss) {
        lt.charts.loss.data.datasets[0].data.push({ x: d.step, y: d.loss });
        lt.charts.lr.data.datasets[0].data.push({ x: d.step, y: d.lr });
        lt.charts.tps.data.datasets[0].data.push({ x: d.step, y: d.tokens_per_sec });
        lt.charts.mem.data.datasets[0].data.push({ x: d.step, y: d.peak_rss_bytes / 1048576 });
        redraw();
      }
    } else if (d.event === 'eval') {
      vloss.textContent = num(d.val_loss);
      if (lt.charts.loss) { lt.charts.loss.data.datasets[1].data.push({ x: d.step, y: d.val_loss }); redraw(); }
    } else if (d.event === 'done' && d.val_loss !== undefined) {
      vloss.textContent = num(d.val_loss);
    } else if (d.event === 'checkpoint') {
      log.replaceChildren(el('p', { class: 'muted' }, `checkpoint at step ${d.step}`));
    }
  }, (err) => { if (err) log.append(errorBox('event stream: ' + err.message)); });
}

/* -- Queue: the jobs in queue order, cancel / resume / watch, refreshed every 2 s -- */
async function pageQueue(main) {
  const box = el('div', { id: 'jobs' });
  main.append(el('h1', {}, 'Queue'), box);
  const draw = async () => {
    const r = await api('GET', '/api/jobs');
    if (!r.jobs.length) { box.replaceChildren(el('p', { class: 'muted' }, 'No jobs. ', el('a', { href: '/train' }, 'Start one'), '.')); return; }
    const rows = r.jobs.map((j) => {
      const p = j.progress || {};
      const act = [];
      if (!['done', 'failed', 'cancelled', 'interrupted'].includes(j.status))
        act.push(el('button', { class: 'secondary', type: 'button', 'aria-label': `Cancel ${j.id}`, onclick: () => api('POST', `/api/jobs/${j.id}/cancel`).then(draw, (e) => box.prepend(errorBox(e.message))) }, 'Cancel'));
      if (j.status === 'interrupted' || j.status === 'cancelled')
        act.push(el('button', { class: 'secondary', type: 'button', 'aria-label': `Resume ${j.id}`, onclick: () => api('POST', `/api/jobs/${j.id}/resume`).then(draw, (e) => box.prepend(errorBox(e.message))) }, 'Resume'));
      return el('tr', { 'data-job': j.id },
        el('td', {}, el('a', { href: `/${j.kind === 'tune' || j.kind === 'compare' ? j.kind : 'train'}?job=${j.id}` }, j.name || j.id), el('br'),
          el('span', { class: 'muted' }, `${j.kind && j.kind !== 'train' ? j.kind + ' · ' : ''}${j.model} · ${j.dataset}`)),
        el('td', { class: 'status-' + j.status }, j.status, j.error ? el('div', { class: j.status === 'cancelled' ? 'help' : 'error' }, j.error.message || String(j.error)) : ''),
        el('td', {}, p.step !== undefined ? `${p.step}${j.total_steps ? ' / ' + j.total_steps : ''}` : ''),
        el('td', {}, num(p.loss)), el('td', {}, j.status === 'running' ? dur(p.eta_s) : ''),
        el('td', {}, when(j.created)), el('td', {}, act));
    });
    box.replaceChildren(el('div', { class: 'table-wrap card' }, el('table', {},
      el('thead', {}, el('tr', {}, ['job', 'status', 'step', 'loss', 'ETA', 'created', ''].map((h) => el('th', { scope: 'col' }, h)))),
      el('tbody', {}, rows))));
  };
  await draw();
  lt.timers.push(setInterval(() => draw().catch(() => {}), 2000));
}

/* -- Runs: the tracking store's runs; tick some to overlay their loss curves -- */
async function pageRuns(main) {
  const r = await api('GET', '/api/runs');
  const runs = r.runs || [];
  const [c, k] = chartBox('chart-runs', 'loss curves of the selected runs');
  main.append(el('h1', {}, 'Runs'));
  if (!runs.length) { main.append(el('p', { class: 'muted' }, 'No runs recorded yet.')); return; }
  const chart = lt.charts.runs = lineChart(k, 'Training loss (dashed: validation)', [], { points: 0 });
  const picked = new Map();
  const names = new Map(runs.map((x) => [x.run_id || x.id, x.name || x.run_id || x.id]));
  const redraw = async () => {
    if (!chart) return;
    const sets = [];
    let i = 0;
    for (const [id] of picked) {
      const label = names.get(id) || id;
      const m = picked.get(id) || await api('GET', `/api/runs/${id}/metrics`);
      picked.set(id, m);
      const col = COLORS[i++ % COLORS.length];
      const h = m.history || {};
      if (h.train_loss) sets.push({ label: `${label} train`, data: h.train_loss.map((p) => ({ x: p[0], y: p[1] })), borderColor: col, backgroundColor: col, pointRadius: 0, borderWidth: 2 });
      if (h.val_loss) sets.push({ label: `${label} valid`, data: h.val_loss.map((p) => ({ x: p[0], y: p[1] })), borderColor: col, backgroundColor: col, borderDash: [6, 4], pointRadius: 2, borderWidth: 2 });
    }
    chart.data.datasets = sets;
    chart.update('none');
  };
  const rows = runs.map((run, idx) => {
    const id = run.run_id || run.id;
    const cb = el('input', { type: 'checkbox', id: `run-${idx}`, checked: idx < 3, onchange: () => {
      if (cb.checked) picked.set(id, null); else picked.delete(id);
      redraw().catch((e) => main.append(errorBox(e.message)));
    } });
    if (idx < 3) picked.set(id, null);
    const m = run.metrics || {};
    const last = (k) => (m[k] && typeof m[k] === 'object' ? m[k].last : m[k]);
    return el('tr', {}, el('td', {}, cb), el('td', {}, el('label', { for: `run-${idx}` }, run.name || id), el('code', { class: 'muted' }, id)),
      el('td', { class: 'status-' + (run.status || '').toLowerCase() }, run.status || ''), el('td', {}, when(run.start_time || run.started)),
      el('td', {}, num(last('train_loss'))), el('td', {}, num(last('val_loss'))));
  });
  main.append(c, el('div', { class: 'table-wrap card' }, el('table', {},
    el('thead', {}, el('tr', {}, ['show', 'run', 'status', 'started', 'train loss', 'val loss'].map((h) => el('th', { scope: 'col' }, h)))),
    el('tbody', {}, rows))));
  await redraw();
}

/* -- Models: the models jobs may use, the adapters finished jobs made (download, register), and
 * the model registry of the server's store: versions and stages, set from here -- */
const FILES = ['adapter_model.safetensors', 'adapter_config.json', 'adapter.gguf', 'mlx-adapters.safetensors', 'mlx-adapter_config.json', 'run_config.yaml'];
const STAGES = ['none', 'staging', 'production', 'archived'];
async function pageModels(main) {
  const [models, jobs] = await Promise.all([api('GET', '/api/models'), api('GET', '/api/jobs')]);
  main.append(el('h1', {}, 'Models'), el('h2', {}, 'Base models'),
    el('div', { class: 'table-wrap card' }, el('table', {},
      el('thead', {}, el('tr', {}, ['name', 'kind', 'size'].map((h) => el('th', { scope: 'col' }, h)))),
      el('tbody', {}, models.models.map((m) => el('tr', {}, el('td', {}, m.name), el('td', {}, m.kind), el('td', {}, bytes(m.size))))))));
  const regBox = el('div', { id: 'registry' });
  const done = jobs.jobs.filter((j) => j.status === 'done' && (j.kind || 'train') === 'train');
  const hpo = jobs.jobs.filter((j) => j.status === 'done' && (j.kind === 'tune' || j.kind === 'compare') && j.best);
  main.append(el('h2', {}, 'Adapters'));
  if (!done.length && !hpo.length) main.append(el('p', { class: 'muted' }, 'No finished jobs yet.'));
  /* Register: the job's run (a tune / compare job's best trial's) becomes the next version */
  const registerForm = (j) => {
    const nm = el('input', { type: 'text', class: 'reg-name', 'aria-label': `Registered model name for job ${j.id}`, placeholder: 'model name', value: '' });
    const msg = el('div', { 'aria-live': 'polite' });
    const btn = el('button', { type: 'submit', class: 'register' }, 'Register');
    const form = el('form', { class: 'row' }, nm, btn);
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      btn.disabled = true;
      try {
        const m = await api('POST', '/api/registry', { job: j.id, name: nm.value.trim() });
        msg.replaceChildren(el('p', { class: 'ok' }, `Registered as ${m.name} version ${m.version}`));
        await drawRegistry(regBox);
      } catch (e) { msg.replaceChildren(errorBox(e.message)); } finally { btn.disabled = false; }
    });
    return [form, msg];
  };
  const links = (j) => {
    const have = j.files ? FILES.filter((f) => (Array.isArray(j.files) ? j.files.includes(f) : j.files[f])) : FILES;
    return [el('a', { href: `/api/jobs/${j.id}/adapter/adapter.zip`, download: '', class: 'zip' }, 'adapter.zip'), ' · ',
      mergedButton(j),
      el('details', {}, el('summary', {}, 'single files'),
        el('ul', {}, have.map((f) => el('li', {}, el('a', { href: `/api/jobs/${j.id}/adapter/${f}`, download: '' }, f)))))];
  };
  if (done.length) main.append(el('div', { class: 'table-wrap card' }, el('table', {},
    el('thead', {}, el('tr', {}, ['job', 'model', 'result', 'download', 'register'].map((h) => el('th', { scope: 'col' }, h)))),
    el('tbody', {}, done.map((j) => {
      const [form, msg] = registerForm(j);
      return el('tr', { 'data-job': j.id },
        el('td', {}, el('a', { href: `/train?job=${j.id}` }, j.name || j.id)), el('td', {}, j.model),
        el('td', {}, j.result ? `${j.result.steps} steps · loss ${num(j.result.train_loss)}${j.result.val_loss != null ? ' · val ' + num(j.result.val_loss) : ''}` : ''),
        el('td', {}, links(j)), el('td', {}, form, msg));
    })))));
  if (hpo.length) main.append(el('h3', {}, 'Best trials of tune / compare jobs'), el('div', { class: 'table-wrap card' }, el('table', {},
    el('thead', {}, el('tr', {}, ['job', 'kind', 'best trial', 'value', 'download', 'register'].map((h) => el('th', { scope: 'col' }, h)))),
    el('tbody', {}, hpo.map((j) => el('tr', { 'data-job': j.id },
      el('td', {}, el('a', { href: `/${j.kind}?job=${j.id}` }, j.name || j.id)), el('td', {}, j.kind),
      el('td', {}, `${j.best.method ? j.best.method + ' ' : ''}#${j.best.trial}`), el('td', {}, num(j.best.value)),
      el('td', {}, links(j)), el('td', {}, ...registerForm(j))))))));
  main.append(el('h2', {}, 'Registry'), regBox);
  await drawRegistry(regBox);
}
/* The merged model (a full fine-tune: its model) as a zipped HF folder: made on the server's
 * own thread (POST .../merged answers 202 while it is made), polled, then downloaded. */
function mergedButton(j) {
  const url = `/api/jobs/${j.id}/merged?format=hf&dtype=f32`;
  const state = el('span', { class: 'muted merged-state', 'aria-live': 'polite' });
  const btn = el('button', { type: 'button', class: 'secondary merged', 'data-job': j.id,
    title: 'the base model with this adapter merged in (loratune fuse), or a full fine-tune\'s model: a Hugging Face folder, f32, zipped; made once, on the server' }, 'merged model (.zip)');
  btn.addEventListener('click', async () => {
    btn.disabled = true;
    try {
      for (;;) {
        const r = await api('POST', url);
        if (r.state === 'ready') {
          state.textContent = `ready · ${bytes(r.size)}`;
          const a = el('a', { href: r.location, download: '', class: 'merged-link' }, 'download');
          state.append(' · ', a);
          a.click();
          break;
        }
        state.textContent = `making… ${r.phase || ''} · ${num(r.elapsed_s, 0)} s`;
        await new Promise((ok) => setTimeout(ok, 1000));
      }
    } catch (e) { state.replaceChildren(errorBox(e.message)); } finally { btn.disabled = false; }
  });
  return el('span', {}, btn, ' ', state);
}
async function drawRegistry(box) {
  const reg = await api('GET', '/api/registry');
  if (!reg.models.length) {
    box.replaceChildren(el('p', { class: 'muted' }, 'No registered models yet: register a finished job above (or `loratune models register RUN --name NAME --store WORK/store`).'));
    return;
  }
  box.replaceChildren(...reg.models.map((m) => el('section', { class: 'card', 'data-model': m.name },
    el('h3', {}, m.name, m.description ? el('span', { class: 'muted' }, ' · ' + m.description) : null),
    el('div', { class: 'table-wrap' }, el('table', { class: 'stack' },
      el('thead', {}, el('tr', {}, ['version', 'stage', 'run', 'data', 'registered', 'set stage', ''].map((h) => el('th', { scope: 'col' }, h)))),
      el('tbody', {}, m.versions.map((v) => {
        const sel = el('select', { class: 'stage-select', 'aria-label': `Stage of ${m.name} version ${v.version}` },
          STAGES.map((s) => el('option', { value: s, selected: s === v.stage }, s)));
        const btn = el('button', { type: 'submit', class: 'set-stage' }, 'Set stage');
        const msg = el('div', { 'aria-live': 'polite' });
        const form = el('form', { class: 'row' }, sel, btn);
        form.addEventListener('submit', async (ev) => {
          ev.preventDefault();
          btn.disabled = true;
          try {
            await api('POST', `/api/registry/${encodeURIComponent(m.name)}/stage`, { version: v.version, stage: sel.value });
            await drawRegistry(box);
          } catch (e) { msg.replaceChildren(errorBox(e.message)); btn.disabled = false; }
        });
        return el('tr', { 'data-version': v.version },
          el('td', { 'data-label': 'version' }, String(v.version)),
          el('td', { 'data-label': 'stage' }, el('span', { class: `stage stage-${v.stage}` }, v.stage)),
          el('td', { 'data-label': 'run' }, v.run_id ? String(v.run_id) : ''),
          el('td', { 'data-label': 'data' }, v.data && v.data.md5 ? el('code', { title: v.data.path || '' }, v.data.md5.slice(0, 8)) : ''),
          el('td', { 'data-label': 'registered' }, when(v.created)),
          el('td', { 'data-label': 'set stage' }, form, msg),
          el('td', { 'data-label': '' }, el('a', { href: `/deployments?model=${encodeURIComponent(m.name)}&version=${v.version}` }, 'Deploy…')));
      })))))));
}

/* -- Deployments: registry versions served under their model's name (docs/SERVING.md
 * "Deployment"): stable and canary versions, the canary's share, drift and held-out loss,
 * deploy / canary / rollback / evaluate through the REST API -- */
async function pageDeployments(main, q) {
  const [reg, deps] = await Promise.all([api('GET', '/api/registry'), api('GET', '/api/deployments')]);
  main.append(el('h1', {}, 'Deployments'));
  const mSel = el('select', { id: 'dep-model' }, reg.models.map((m) => el('option', { value: m.name, selected: m.name === q.get('model') }, m.name)));
  const vSel = el('select', { id: 'dep-version' });
  const fillVersions = () => {
    const m = reg.models.find((x) => x.name === mSel.value);
    vSel.replaceChildren(...(m ? m.versions : []).slice().reverse().map((v) =>
      el('option', { value: v.version, selected: String(v.version) === q.get('version') }, `${v.version} (${v.stage})`)));
  };
  mSel.addEventListener('change', fillVersions);
  fillVersions();
  const share = el('input', { id: 'dep-canary', type: 'number', min: 0, max: 0.99, step: 0.05, value: 0, 'aria-describedby': 'dep-canary-help' });
  const msg = el('div', { id: 'dep-result', 'aria-live': 'polite' });
  const btn = el('button', { id: 'deploy', type: 'submit' }, 'Deploy');
  const form = el('form', { class: 'card' },
    el('div', { class: 'row' },
      el('div', {}, el('label', { for: 'dep-model' }, 'Registered model'), mSel),
      el('div', {}, el('label', { for: 'dep-version' }, 'Version'), vSel),
      el('div', {}, el('label', { for: 'dep-canary' }, 'Canary share'), share,
        el('p', { class: 'help', id: 'dep-canary-help' }, '0: the version becomes the stable one (hot swap); 0 < share < 1: a canary taking that share of the requests')),
      btn), msg);
  if (!reg.models.length) form.append(el('p', { class: 'muted' }, 'No registered models: register a finished job on the Models page first.'));
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    btn.disabled = true;
    try {
      const d = await api('POST', '/api/deployments', { model: mSel.value, version: +vSel.value, canary: +share.value || 0 });
      msg.replaceChildren(el('p', { class: 'ok' }, `Deployed: ${d.name} stable v${d.stable ? d.stable.version : '-'}` + (d.canary ? `, canary v${d.canary.version} (${Math.round(d.canary_share * 100)}%)` : '')));
      await drawDeployments(list);
    } catch (e) { msg.replaceChildren(errorBox(e.message)); } finally { btn.disabled = false; }
  });
  const list = el('div', { id: 'deployments' });
  main.append(form, el('h2', {}, 'Deployed'), list);
  drawDeploymentList(list, deps);
  lt.timers.push(setInterval(() => drawDeployments(list).catch(() => {}), 5000));
}
async function drawDeployments(list) { drawDeploymentList(list, await api('GET', '/api/deployments')); }
function drawDeploymentList(list, deps) {
  if (!deps.deployments.length) { list.replaceChildren(el('p', { class: 'muted' }, 'Nothing deployed yet (the server serves deployments when started with --model).')); return; }
  const ver = (v) => v ? [el('b', {}, `v${v.version}`), ` · ${v.model}`,
    v.drift ? el('div', { class: 'help' }, `drift PSI ${num(v.drift.psi, 3)} · KL ${num(v.drift.kl, 3)} · ${v.drift.window_tokens} tokens`) : null,
    v.holdout_loss ? el('div', { class: 'help' }, `held-out loss ${num(v.holdout_loss.loss)}`) : null] : '—';
  list.replaceChildren(el('div', { class: 'table-wrap card' }, el('table', { class: 'stack' },
    el('thead', {}, el('tr', {}, ['name', 'stable', 'canary', 'canary share', 'previous', 'retrains', 'deployed', ''].map((h) => el('th', { scope: 'col' }, h)))),
    el('tbody', {}, deps.deployments.map((d) => {
      const out = el('div', { 'aria-live': 'polite' });
      const act = (label, cls, path) => {
        const b = el('button', { type: 'button', class: `secondary ${cls}` }, label);
        b.addEventListener('click', async () => {
          b.disabled = true;
          try { await api('POST', `/api/deployments/${encodeURIComponent(d.name)}/${path}`); await drawDeployments(list); }
          catch (e) { out.replaceChildren(errorBox(e.message)); b.disabled = false; }
        });
        return b;
      };
      const rt = d.retrains || {};
      return el('tr', { 'data-deployment': d.name },
        el('td', { 'data-label': 'name' }, el('code', {}, d.name)),
        el('td', { 'data-label': 'stable', class: 'stable' }, ver(d.stable)),
        el('td', { 'data-label': 'canary', class: 'canary' }, ver(d.canary)),
        el('td', { 'data-label': 'canary share', class: 'share' }, d.canary ? `${Math.round(d.canary_share * 1000) / 10}%` : '0%'),
        el('td', { 'data-label': 'previous', class: 'previous' }, (d.previous || []).map((v) => 'v' + v).join(', ')),
        el('td', { 'data-label': 'retrains' }, `${rt.promoted || 0} promoted · ${rt.rejected || 0} rejected · ${rt.failed || 0} failed` + (d.retraining ? ' · retraining…' : '')),
        el('td', { 'data-label': 'deployed' }, when(d.deployed)),
        el('td', { 'data-label': '' }, el('div', { class: 'row' },
          (d.canary || (d.previous && d.previous.length)) ? act(d.canary ? 'Roll back canary' : 'Roll back', 'rollback', 'rollback') : null,
          d.holdout ? act('Evaluate', 'evaluate', 'evaluate') : null), out));
    })))));
}

/* -- Tune and Compare: `loratune tune` / `loratune compare` as jobs (kind tune | compare); the
 * job view draws the study (GET /api/jobs/{id}/study) again on each trial event -- */
const HPO_OPTS = ['iters', 'eval-batches', 'eval-every', 'max-seq-len', 'batch-size', 'valid-fraction', 'lora-alpha', 'seed', 'threads'];
const DEFAULT_SPACE = {
  lr: { type: 'float', low: 1e-4, high: 3e-3, log: true },
  'lora-rank': { type: 'int', low: 2, high: 16, log: true },
  'lora-targets': { type: 'categorical', choices: ['attention', 'mlp', 'all'] },
};
async function hpoForm(main, q, kind) {
  const [opts, dss, models] = await Promise.all([api('GET', '/api/options'), api('GET', '/api/datasets'), api('GET', '/api/models')]);
  const okDs = dss.datasets.filter((d) => !d.validation || d.validation.ok);
  const dsSel = el('select', { id: 'dataset' }, okDs.map((d) => el('option', { value: d.id, selected: d.id === q.get('dataset') }, `${d.name} (${d.id})`)));
  const mSel = el('select', { id: 'model' }, models.models.map((m) => el('option', { value: m.name }, `${m.name} · ${bytes(m.size)}`)));
  const name = el('input', { id: 'job-name', type: 'text', placeholder: 'optional' });
  const byName = Object.fromEntries(opts.options.map((o) => [o.name, o]));
  const fields = [];
  const base = el('div', { class: 'opts' });
  for (const n of HPO_OPTS) if (byName[n]) base.append(optField(byName[n], fields));
  const trials = el('input', { id: 'hpo-trials', type: 'number', min: 1, max: 1000, value: kind === 'tune' ? 8 : 2 });
  const sampler = el('select', { id: 'hpo-sampler' }, ['auto', 'gp', 'random', 'sobol'].map((x) => el('option', { value: x }, x)));
  const seed = el('input', { id: 'hpo-seed', type: 'number', min: 0, step: 1, value: 0 });
  const budget = el('input', { id: 'hpo-budget', type: 'text', placeholder: 'none (90s, 30m, 1h30m)' });
  const prune = el('input', { id: 'hpo-prune', type: 'checkbox', checked: true });
  const space = el('textarea', { id: 'hpo-space', rows: 7, spellcheck: 'false', class: 'code' },
    kind === 'tune' ? JSON.stringify(DEFAULT_SPACE, null, 1) : '');
  let method = null;
  const methods = [];
  if (kind === 'tune') {
    method = el('select', { id: 'hpo-method' }, ['lora', 'dora', 'qlora', 'full'].map((x) => el('option', { value: x }, x)));
  } else {
    for (const m of ['lora', 'dora', 'qlora', 'full'])
      methods.push(el('input', { id: `hpo-m-${m}`, type: 'checkbox', value: m, checked: m === 'lora' || m === 'qlora' }));
  }
  const go = el('button', { id: 'start', type: 'submit' }, kind === 'tune' ? 'Start tuning' : 'Start comparing');
  const msg = el('div', { id: 'hpo-msg', 'aria-live': 'polite' });
  const lab = (id, t, e, help) => el('div', {}, el('label', { for: id }, t), e, help ? el('p', { class: 'help' }, help) : null);
  const form = el('form', { class: 'card', novalidate: true },
    el('div', { class: 'row' }, lab('dataset', 'Dataset', dsSel), lab('model', 'Model', mSel), lab('job-name', 'Job name', name)),
    el('h2', {}, 'Search'),
    el('div', { class: 'opts' },
      method ? lab('hpo-method', 'Method', method) :
        el('fieldset', { class: 'methods' }, el('legend', {}, 'Methods'), methods.map((c) => el('label', { for: c.id }, c, c.value))),
      lab('hpo-trials', kind === 'tune' ? 'Trials' : 'Trials per method', trials, 'infeasible trials (over the memory budget) are not counted'),
      lab('hpo-budget', 'Time budget', budget, kind === 'compare' ? 'shared equally by the methods' : 'stop asking for trials after it'),
      lab('hpo-sampler', 'Sampler', sampler, 'auto: Sobol points, then Gaussian-process Bayesian optimization'),
      lab('hpo-seed', 'Sampler seed', seed),
      el('div', { class: 'opt check' }, el('label', { for: 'hpo-prune' }, prune, 'successive-halving pruning'))),
    lab('hpo-space', 'Search space (JSON; docs/TUNE.md)', space,
      kind === 'tune' ? 'option name → {"type": "float" | "int", "low", "high", "log"} or {"type": "categorical", "choices"}' :
        'empty: each method\'s default space (learning-rate priors differ by method)'),
    el('h2', {}, 'Every trial starts from'), el('p', { class: 'help' }, 'Empty fields keep the default; names are those of `loratune train --help`.'), base,
    el('div', { class: 'row' }, go), msg);
  main.append(el('h1', {}, kind === 'tune' ? 'Tune' : 'Compare'),
    el('p', { class: 'help' }, kind === 'tune' ? 'Hyperparameter search: each trial is a training run; the final validation loss is minimised (`loratune tune`).'
      : 'Tune several methods under one budget and compare their best trials (`loratune compare`).'));
  if (!okDs.length) main.append(el('p', {}, 'No valid dataset yet: ', el('a', { href: '/data' }, 'upload one'), '.'));
  main.append(form);
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const options = {};
    for (const f of fields) { const v = f.get(); if (v !== undefined) options[f.name] = v; }
    const search = { trials: parseInt(trials.value, 10), sampler: sampler.value, 'tune-seed': parseInt(seed.value || '0', 10) };
    if (!prune.checked) search.prune = false;
    if (budget.value.trim()) search['time-budget'] = budget.value.trim();
    if (space.value.trim()) {
      try { search.space = JSON.parse(space.value); } catch (e) {
        msg.replaceChildren(errorBox('Search space: ' + e.message)); space.setAttribute('aria-invalid', 'true'); space.focus(); return;
      }
    }
    if (method) options.method = method.value;
    else search.methods = methods.filter((c) => c.checked).map((c) => c.value);
    const body = { kind, dataset: dsSel.value, model: mSel.value, options, search };
    if (name.value.trim()) body.name = name.value.trim();
    go.disabled = true;
    try {
      const job = await api('POST', '/api/jobs', body);
      await show(`/${kind}?job=${job.id}`, true);
    } catch (e) { msg.replaceChildren(errorBox(e.message)); } finally { go.disabled = false; }
  });
}
async function pageTune(main, q) { return q.get('job') ? hpoView(main, q.get('job')) : hpoForm(main, q, 'tune'); }
async function pageCompare(main, q) { return q.get('job') ? hpoView(main, q.get('job')) : hpoForm(main, q, 'compare'); }

function paramText(p) {
  return Object.entries(p || {}).map(([k, v]) => `${k}=${typeof v === 'number' ? num(v, 5) : v}`).join(' ');
}
async function hpoView(main, id) {
  const job = await api('GET', `/api/jobs/${id}`);
  const kind = job.kind || 'train';
  if (kind === 'train') return jobView(main, id);
  const status = el('b', { id: 'job-status', class: 'status-' + job.status }, job.status);
  const done = el('b', { id: 'hpo-done' }, ''), best = el('b', { id: 'hpo-best' }, '');
  const actions = el('div', { class: 'row' });
  const log = el('div', { id: 'job-log', 'aria-live': 'polite' });
  const summary = el('div', { id: 'hpo-summary' });
  const table = el('div', { id: 'trials' });
  const [c1, k1] = chartBox('chart-history', 'optimization history: validation loss of each trial and the best so far');
  const [c2, k2] = chartBox('chart-intermediate', 'validation loss by step of each trial');
  main.append(el('h1', {}, kind === 'tune' ? 'Tune ' : 'Compare ', el('code', {}, id), job.name ? ` · ${job.name}` : ''),
    el('div', { class: 'card' }, el('div', { class: 'stats' },
      el('span', {}, 'status ', status), el('span', {}, 'trials done ', done), el('span', {}, 'best validation loss ', best)), actions, log),
    summary);
  const bars = {};
  if (kind === 'compare') {
    const boxes = [['loss', 'best validation loss by method'], ['time', 'training time of the best trial (s)'],
      ['mem', 'planned peak memory of the best trial (MiB)'], ['tps', 'tokens per second of the best trial']]
      .map(([k, label]) => { const [c, cv] = chartBox('chart-cmp-' + k, label); bars[k] = cv; return c; });
    main.append(el('div', { class: 'charts' }, boxes));
  }
  main.append(el('div', { class: 'charts' }, c1, c2), el('h2', {}, 'Trials'), table);
  lt.charts.history = lineChart(k1, 'Optimization history', [], { x: 'trial', y: 'validation loss' });
  lt.charts.intermediate = lineChart(k2, 'Intermediate values', [], { y: 'validation loss' });
  if (lt.charts.history) lt.charts.history.options.scales.x.ticks.precision = 0; /* trials are whole */
  const barChart = (cv, title) => window.Chart ? new Chart(cv, {
    type: 'bar', data: { labels: [], datasets: [{ label: title, data: [], backgroundColor: COLORS }] },
    options: { animation: false, maintainAspectRatio: false, plugins: { legend: { display: false }, title: { display: true, text: title, color: getComputedStyle(document.body).color } } },
  }) : null;
  if (kind === 'compare') {
    lt.charts.cmpLoss = barChart(bars.loss, 'Best validation loss');
    if (lt.charts.cmpLoss) lt.charts.cmpLoss.options.scales.y.beginAtZero = false; /* the differences show */
    lt.charts.cmpTime = barChart(bars.time, 'Time (s)');
    lt.charts.cmpMem = barChart(bars.mem, 'Peak memory (MiB)');
    lt.charts.cmpTps = barChart(bars.tps, 'Tokens/s');
  }
  const setActions = (st) => {
    actions.replaceChildren();
    if (!['done', 'failed', 'cancelled', 'interrupted'].includes(st))
      actions.append(el('button', { class: 'secondary', type: 'button', id: 'cancel', onclick: async () => {
        try { await api('POST', `/api/jobs/${id}/cancel`); } catch (e) { log.append(errorBox(e.message)); }
      } }, 'Cancel'));
    if (kind === 'tune' && (st === 'interrupted' || st === 'cancelled'))
      actions.append(el('button', { type: 'button', id: 'resume', onclick: async () => {
        try { await api('POST', `/api/jobs/${id}/resume`); show(`/tune?job=${id}`); } catch (e) { log.append(errorBox(e.message)); }
      } }, 'Resume'));
  };
  setActions(job.status);
  let busy = false, again = false;
  const draw = async () => {
    if (busy) { again = true; return; }
    busy = true;
    try {
      const st = await api('GET', `/api/jobs/${id}/study`);
      drawStudy(st);
      if (job.status === 'done') { /* the best trial's adapter, as a train job's */
        const jr = await api('GET', `/api/jobs/${id}`);
        const old = $('#best-download');
        if (old) old.remove();
        if (jr.best && (jr.files || []).length) summary.append(el('div', { class: 'card', id: 'best-download' },
          el('p', {}, `Best trial: ${jr.best.method ? jr.best.method + ' ' : ''}#${jr.best.trial} (validation loss ${num(jr.best.value, 5)}) `,
            el('a', { href: `/api/jobs/${id}/adapter/adapter.zip`, download: '', class: 'btn zip' }, 'Download its adapter (.zip)')),
          el('details', {}, el('summary', {}, 'single files'),
            el('ul', {}, jr.files.map((f) => el('li', {}, el('a', { href: `/api/jobs/${id}/adapter/${f}`, download: '' }, f)))))));
      }
    } catch (e) { log.append(errorBox(e.message)); }
    busy = false;
    if (again) { again = false; draw(); }
  };
  const drawStudy = (st) => {
    const rows = [];
    const hist = [], inter = [];
    let nDone = 0, bestV = null;
    st.studies.forEach((sd, si) => {
      const trials = (sd.study && sd.study.trials) || [];
      const col = COLORS[si % COLORS.length];
      const pts = [], bestLine = [];
      let b = null;
      for (const t of trials) {
        if (t.state !== 'running') nDone++;
        if (t.state === 'complete' && typeof t.value === 'number') {
          pts.push({ x: t.trial, y: t.value });
          b = b === null ? t.value : Math.min(b, t.value);
          bestLine.push({ x: t.trial, y: b });
          if (bestV === null || t.value < bestV) bestV = t.value;
        }
        if (t.intermediate && t.intermediate.length)
          inter.push({ label: `${sd.method ? sd.method + ' ' : ''}trial ${t.trial}`, data: t.intermediate.map((p) => ({ x: p[0], y: p[1] })),
            borderColor: COLORS[(si * 3 + t.trial) % COLORS.length], backgroundColor: COLORS[(si * 3 + t.trial) % COLORS.length], pointRadius: 2, borderWidth: 1.5 });
        const info = t.info || {};
        const why = t.infeasible || t.error || '';
        rows.push(el('tr', { 'data-trial': t.trial, 'data-method': sd.method || '' },
          ...(st.kind === 'compare' ? [el('td', {}, sd.method)] : []),
          el('td', {}, t.trial), el('td', { class: 'status-' + (t.state === 'complete' ? 'done' : t.state) }, t.state, why ? el('div', { class: 'help' }, why) : ''),
          el('td', { class: 'value' }, typeof t.value === 'number' ? num(t.value, 5) : ''),
          el('td', {}, paramText(t.params)), el('td', {}, info.steps ?? ''), el('td', {}, info.time_s !== undefined ? num(info.time_s, 1) : ''),
          el('td', {}, info.tokens_per_sec ? Math.round(info.tokens_per_sec).toLocaleString('en-US') : ''),
          el('td', {}, bytes(info.planned_peak_bytes))));
      }
      const lab = sd.method ? sd.method + ' ' : '';
      hist.push({ label: `${lab}trial value`, data: pts, borderColor: col, backgroundColor: col, showLine: false, pointRadius: 4 },
        { label: `${lab}best so far`, data: bestLine, borderColor: col, backgroundColor: col, borderDash: [6, 4], pointRadius: 0, borderWidth: 2, stepped: true });
    });
    done.textContent = String(nDone) + (job.search && job.search.trials ? ` / ${job.search.trials * st.studies.length}` : '');
    best.textContent = bestV === null ? '' : num(bestV, 5);
    if (lt.charts.history) { lt.charts.history.data.datasets = hist; lt.charts.history.update('none'); }
    if (lt.charts.intermediate) { lt.charts.intermediate.data.datasets = inter; lt.charts.intermediate.update('none'); }
    const heads = [...(st.kind === 'compare' ? ['method'] : []), 'trial', 'state', 'val loss', 'parameters', 'steps', 'time (s)', 'tokens/s', 'planned peak'];
    table.replaceChildren(rows.length ? el('div', { class: 'table-wrap card' }, el('table', { id: 'trials-table' },
      el('thead', {}, el('tr', {}, heads.map((h) => el('th', { scope: 'col' }, h)))), el('tbody', {}, rows))) : el('p', { class: 'muted' }, 'No trial yet.'));
    const r = st.result;
    if (st.kind === 'compare' && r && r.methods) {
      const ms = r.methods;
      const set = (c, vals) => { if (c) { c.data.labels = ms.map((m) => m.method); c.data.datasets[0].data = vals; c.update('none'); } };
      set(lt.charts.cmpLoss, ms.map((m) => m.best_val_loss));
      set(lt.charts.cmpTime, ms.map((m) => m.time_s ?? null));
      set(lt.charts.cmpMem, ms.map((m) => (m.peak_bytes ?? 0) / 1048576));
      set(lt.charts.cmpTps, ms.map((m) => m.tokens_per_sec ?? null));
      summary.replaceChildren(el('h2', {}, 'Comparison'), el('p', { class: 'help' }, r.metric || ''),
        el('div', { class: 'table-wrap card' }, el('table', { id: 'compare-table' },
          el('thead', {}, el('tr', {}, ['method', 'trials c/p/f/i', 'best val loss', 'perplexity', 'time (s)', 'peak memory', 'tokens/s', 'trainable', 'saved', 'best trial']
            .map((h) => el('th', { scope: 'col' }, h)))),
          el('tbody', {}, ms.map((m) => el('tr', { 'data-method': m.method },
            el('td', {}, m.method), el('td', {}, `${m.complete}/${m.pruned}/${m.failed}/${m.infeasible}`),
            el('td', { class: 'value' }, m.best_val_loss === null ? '–' : num(m.best_val_loss, 5)), el('td', {}, m.best_val_ppl ? num(m.best_val_ppl, 2) : ''),
            el('td', {}, m.time_s !== undefined ? num(m.time_s, 2) : ''), el('td', {}, bytes(m.peak_bytes)),
            el('td', {}, m.tokens_per_sec ? Math.round(m.tokens_per_sec).toLocaleString('en-US') : ''),
            el('td', {}, m.trainable_params !== undefined ? m.trainable_params.toLocaleString('en-US') : ''), el('td', {}, bytes(m.saved_bytes)),
            el('td', {}, m.best_trial ?? '')))))));
    } else if (st.kind === 'tune' && r && r.best) {
      summary.replaceChildren(el('div', { class: 'card', id: 'best' }, el('h2', {}, 'Best trial'),
        el('p', {}, `trial ${r.best.trial}: validation loss `, el('b', {}, num(r.best.value, 5)), ` · ${r.best.params}`),
        el('p', { class: 'help' }, `${r.complete} complete · ${r.pruned} pruned · ${r.failed} failed · ${r.infeasible} infeasible · ${dur(r.elapsed_s)}` + (r.pruning ? ` · pruning ${r.pruning}` : '')),
        el('p', { class: 'help' }, 'Train it: ', el('code', {}, `loratune train -c ${r.best_config} --out OUT`))));
    }
  };
  await draw();
  followEvents(id, (k, d) => {
    if (k === 'job') {
      health();
      status.textContent = d.status; status.className = 'status-' + d.status;
      setActions(d.status);
      if (d.message) log.append(d.status === 'failed' ? errorBox(d.message) : el('p', { class: 'muted' }, d.message));
      if (lt_terminal(d.status)) { job.status = d.status; draw(); }
    } else if (k === 'trial') draw();
  }, (err) => { if (err) log.append(errorBox('event stream: ' + err.message)); });
}
function lt_terminal(st) { return ['done', 'failed', 'cancelled', 'interrupted'].includes(st); }

/* -- Playground: the same conversation with two models side by side (the base and an adapter),
 * both answers streamed at once from /v1/chat/completions (docs/SERVING.md; `serve --model`) -- */
async function pagePlayground(main) {
  main.append(el('h1', {}, 'Playground'));
  /* GET /ready first: 200 {model: null} without --model, 503 while loading (no failed request
   * in the console for a server that serves no model) */
  const rd = await fetch('/ready', { headers: headers() });
  const ready = await rd.json().catch(() => ({}));
  if (rd.ok && !ready.model) {
    main.append(el('p', { id: 'play-none', class: 'card' }, 'This server serves no model: start it with ',
      el('code', {}, 'loratune serve --model MODEL'), ' to chat with the base model and its adapters here (docs/SERVING.md).'));
    return;
  }
  if (!rd.ok) {
    const why = ready.status === 'failed' ? `the model could not be loaded: ${ready.error || ''}` : 'the model is loading… (this page reloads when it is ready)';
    main.append(el('p', { id: 'play-none', class: 'card', 'aria-live': 'polite' }, why));
    if (ready.status !== 'failed') lt.timers.push(setInterval(() => fetch('/ready').then((r) => { if (r.ok) show('/playground'); }, () => {}), 2000));
    return;
  }
  const list = await api('GET', '/v1/models');
  const ids = list.data.map((m) => m.id);
  const base = list.data.find((m) => !m.parent);
  const adapters = list.data.filter((m) => m.parent);
  /* sampling settings: the request fields of /v1/chat/completions */
  const field = (id, label, attrs, help) => el('div', {}, el('label', { for: id }, label),
    el('input', { id, type: 'number', 'aria-describedby': id + '-help', ...attrs }), el('p', { class: 'help', id: id + '-help' }, help));
  const settings = el('div', { class: 'opts' },
    field('play-temperature', 'temperature', { min: 0, max: 2, step: 0.1, value: 0.7 }, '0 … 2; 0 is greedy (the same text every time)'),
    field('play-top-p', 'top_p', { min: 0.01, max: 1, step: 0.05, value: 1 }, '(0, 1]: sample from the smallest set of tokens holding this probability'),
    field('play-max-tokens', 'max_tokens', { min: 1, max: 4096, step: 1, value: 128 }, 'the longest answer, in tokens'),
    field('play-seed', 'seed', { min: 0, step: 1, placeholder: 'random' }, 'the same seed, prompt and settings give the same text'));
  const system = el('input', { id: 'play-system', type: 'text', placeholder: 'optional' });
  const pane = (side, pick) => {
    const sel = el('select', { id: `play-model-${side}` }, ids.map((m) => el('option', { value: m, selected: m === pick }, m)));
    const log = el('div', { class: 'chat', id: `play-log-${side}`, role: 'log', 'aria-live': 'polite', 'aria-label': `answers of the ${side} model` });
    const stat = el('p', { class: 'help', id: `play-stat-${side}` });
    const box = el('section', { class: 'card pane', 'aria-label': `${side} model` },
      el('label', { for: `play-model-${side}` }, side === 'left' ? 'Model A' : 'Model B'), sel, log, stat);
    return { side, sel, log, stat, box, messages: [] };
  };
  const panes = [pane('left', base && base.id), pane('right', adapters.length ? adapters[0].id : base && base.id)];
  const input = el('textarea', { id: 'play-input', rows: 3, placeholder: 'Write a message (Ctrl+Enter sends)', required: true });
  const send = el('button', { id: 'play-send', type: 'submit' }, 'Send to both');
  const stop = el('button', { id: 'play-stop', type: 'button', class: 'secondary', disabled: true }, 'Stop');
  const clear = el('button', { id: 'play-clear', type: 'button', class: 'secondary' }, 'New chat');
  const msg = el('div', { id: 'play-msg', 'aria-live': 'polite' });
  const form = el('form', { class: 'card', novalidate: true },
    el('label', { for: 'play-input' }, 'Message'), input, el('div', { class: 'row' }, send, stop, clear), msg);
  /* load the adapter of a finished train job (POST /v1/adapters {name, job}) */
  const jobs = (await api('GET', '/api/jobs').catch(() => ({ jobs: [] }))).jobs.filter((j) => j.status === 'done' && (j.kind || 'train') === 'train');
  const loadRow = el('div', { class: 'row' });
  if (jobs.length) {
    const jsel = el('select', { id: 'play-job' }, jobs.map((j) => el('option', { value: j.id }, `${j.name || j.id} · ${j.model}`)));
    const load = el('button', { type: 'button', class: 'secondary', id: 'play-load' }, 'Serve its adapter');
    load.addEventListener('click', async () => {
      const j = jobs.find((x) => x.id === jsel.value);
      const name = (j.name || j.id).replace(/[^A-Za-z0-9._-]/g, '-');
      load.disabled = true;
      try {
        await api('POST', '/v1/adapters', { name, job: j.id });
        for (const p of panes) p.sel.append(el('option', { value: name }, name));
        panes[1].sel.value = name;
        msg.replaceChildren(el('p', { class: 'ok' }, `adapter ${name} loaded (Model B)`));
      } catch (e) { msg.replaceChildren(errorBox(e.message)); } finally { load.disabled = false; }
    });
    loadRow.append(el('div', {}, el('label', { for: 'play-job' }, 'Adapter of a finished job'), jsel), load);
  }
  main.append(el('div', { class: 'card' }, el('h2', {}, 'Settings'), settings,
      el('div', { class: 'row' }, el('div', {}, el('label', { for: 'play-system' }, 'System prompt'), system)), loadRow),
    el('div', { class: 'panes' }, panes.map((p) => p.box)), form);
  if (!adapters.length && !jobs.length)
    msg.append(el('p', { class: 'help' }, 'No adapter is served: start the server with --adapter NAME=PATH, or train a job and load its adapter here.'));

  const bubble = (p, role, text) => {
    const t = el('div', { class: 'text' }, text);
    const b = el('div', { class: `msg ${role}` }, el('span', { class: 'who' }, role === 'user' ? 'you' : p.sel.value), t);
    p.log.append(b);
    p.log.scrollTop = p.log.scrollHeight;
    return t;
  };
  let ctls = [];
  const numOr = (id, conv) => { const v = $(id).value.trim(); return v === '' ? undefined : conv(v); };
  /* one streamed answer: reads the chunks (data: {...} lines, then data: [DONE]) */
  const ask = async (p, settingsBody, ctl) => {
    const out = bubble(p, 'assistant', '');
    out.parentElement.classList.add('streaming');
    const t0 = performance.now();
    let text = '', chunks = 0, usage = null, finish = null;
    p.log.dataset.chunks = '0';
    try {
      const messages = [...(system.value.trim() ? [{ role: 'system', content: system.value.trim() }] : []), ...p.messages];
      const r = await fetch('/v1/chat/completions', { method: 'POST', signal: ctl.signal,
        headers: headers({ 'Content-Type': 'application/json' }),
        body: JSON.stringify({ model: p.sel.value, messages, stream: true, stream_options: { include_usage: true }, ...settingsBody }) });
      if (!r.ok) {
        if (r.status === 401) askToken();
        const j = await r.json().catch(() => null);
        throw new Error(j && j.error ? j.error.message : `HTTP ${r.status}`);
      }
      const rd = r.body.getReader();
      const dec = new TextDecoder();
      let buf = '';
      for (let done = false; !done;) {
        const part = await rd.read();
        if (part.done) break;
        buf += dec.decode(part.value, { stream: true });
        let k;
        while ((k = buf.indexOf('\n')) >= 0) {
          const line = buf.slice(0, k).trim();
          buf = buf.slice(k + 1);
          if (!line.startsWith('data:')) continue;
          const data = line.slice(5).trim();
          if (data === '[DONE]') { done = true; break; }
          const c = JSON.parse(data);
          if (c.error) throw new Error(c.error.message);
          if (c.usage) usage = c.usage;
          const ch = c.choices && c.choices[0];
          if (ch && ch.delta && ch.delta.content) {
            text += ch.delta.content;
            out.textContent = text;
            p.log.dataset.chunks = String(++chunks);
            p.log.scrollTop = p.log.scrollHeight;
          }
          if (ch && ch.finish_reason) finish = ch.finish_reason;
        }
      }
      p.messages.push({ role: 'assistant', content: text });
      const s = (performance.now() - t0) / 1000;
      p.stat.textContent = `${usage ? usage.completion_tokens + ' tokens · ' + (usage.completion_tokens / s).toFixed(1) + ' tokens/s · ' : ''}${s.toFixed(1)} s · finish: ${finish || '?'}`;
    } catch (e) {
      p.messages.push({ role: 'assistant', content: text });
      out.parentElement.append(e.name === 'AbortError' ? el('p', { class: 'help' }, 'stopped') : errorBox(e.message));
    } finally {
      out.parentElement.classList.remove('streaming');
      p.log.dataset.done = '1';
    }
  };
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const text = input.value.trim();
    if (!text) { msg.replaceChildren(errorBox('Write a message first.')); input.focus(); return; }
    const body = { temperature: numOr('#play-temperature', parseFloat), top_p: numOr('#play-top-p', parseFloat),
      max_tokens: numOr('#play-max-tokens', (v) => parseInt(v, 10)), seed: numOr('#play-seed', (v) => parseInt(v, 10)) };
    msg.replaceChildren();
    input.value = '';
    send.disabled = true; stop.disabled = false;
    ctls = panes.map(() => new AbortController());
    lt.streams.push(...ctls);
    for (const p of panes) { p.messages.push({ role: 'user', content: text }); bubble(p, 'user', text); delete p.log.dataset.done; }
    await Promise.all(panes.map((p, i) => ask(p, body, ctls[i])));
    send.disabled = false; stop.disabled = true;
  });
  input.addEventListener('keydown', (ev) => { if (ev.key === 'Enter' && (ev.ctrlKey || ev.metaKey)) { ev.preventDefault(); form.requestSubmit(); } });
  stop.addEventListener('click', () => { for (const c of ctls) c.abort(); });
  clear.addEventListener('click', () => { for (const c of ctls) c.abort(); for (const p of panes) { p.messages = []; p.log.replaceChildren(); p.stat.textContent = ''; } input.focus(); });
  for (const p of panes) p.sel.addEventListener('change', () => { p.messages = []; p.log.replaceChildren(); p.stat.textContent = ''; });
}

/* ---- start ------------------------------------------------------------------------------ */
/* On a phone a table's rows stack (app.css): each cell is labelled with its column's header. */
function labelTables() {
  for (const t of document.querySelectorAll('main table:not(.stack)')) {
    const heads = [...t.querySelectorAll('thead th')].map((th) => th.textContent);
    for (const tr of t.querySelectorAll('tbody tr'))
      [...tr.children].forEach((td, i) => {
        td.setAttribute('data-label', heads[i] || '');
        const w = el('div', { class: 'cell' });
        w.append(...td.childNodes);
        td.append(w);
      });
    t.classList.add('stack');
  }
}
new MutationObserver(labelTables).observe($('#main'), { childList: true, subtree: true });
async function health() {
  try {
    const h = await api('GET', '/api/health');
    const run = h.running_jobs || (h.running ? [h.running] : []);
    $('#health').textContent = `${run.length > 1 ? run.length + ' jobs running' : run.length ? 'running ' + run[0] : 'idle'} · ${h.queued} queued · ${h.version}`;
    $('#health').title = h.memory_budget_bytes ? `planned ${bytes(h.memory_planned_bytes)} of a ${bytes(h.memory_budget_bytes)} memory budget` : '';
  } catch (e) { $('#health').textContent = 'server unreachable'; }
}
health();
setInterval(health, 5000);
show(location.pathname + location.search);
