import { api, ApiError, clearError, current, edited, el, formatDate, formatSize, showError } from './api.js';
import { connectEvents, showState } from './events.js';

const $ = (id) => document.getElementById(id);
const banner = $('error');
const PAGE_SIZE = 60;
const MAX_PARALLEL_UPLOADS = 3;
const NETWORK_MESSAGE = 'Could not reach lanpair. Check that the PC is on and on the same network.';

const gallery = { items: [], tiles: new Map(), cursor: null, generation: 0, loading: false, pending: [] };
const uploads = { queue: [], active: 0, total: 0, sent: 0, failed: 0 };
let events = null;
let viewingId = null;

const key = (id) => String(id);
const indexOf = (id) => gallery.items.findIndex((item) => key(item.id) === key(id));

function isUnauthorized(error) {
  return error instanceof ApiError && error.status === 401;
}

function notPaired() {
  events?.close();
  if ($('viewer').open) $('viewer').close();
  $('app').hidden = true;
  $('live').hidden = true;
  clearError(banner);
  $('not-paired').hidden = false;
}

function formatDuration(seconds) {
  const total = Math.max(0, Math.round(seconds));
  const h = Math.floor(total / 3600);
  const m = Math.floor((total % 3600) / 60);
  const s = String(total % 60).padStart(2, '0');
  return h ? `${h}:${String(m).padStart(2, '0')}:${s}` : `${m}:${s}`;
}

/* ---------- Gallery ---------- */

function tileContent(item) {
  if (!item.thumb) return el('span', { class: 'tile-file', text: item.name });
  return el('img', { attrs: { src: current(item.thumb, item), alt: item.name, loading: 'lazy', decoding: 'async' } });
}

function videoBadge(item) {
  if (item.type !== 'video' || item.duration === null || item.duration === undefined) return null;
  return el('span', { class: 'badge', text: `▶ ${formatDuration(item.duration)}`, attrs: { 'aria-hidden': 'true' } });
}

function renderTile(item) {
  const button = el('button', { class: 'tile', attrs: { type: 'button', 'data-id': item.id, title: item.name, 'aria-label': item.name } },
    tileContent(item), videoBadge(item));
  return el('li', {}, button);
}

function refreshEmpty() {
  $('gallery-empty').hidden = gallery.loading || gallery.items.length > 0;
}

/** Say whether ``a`` comes before ``b`` in the gallery: newest taken first, then by id. */
function comesBefore(a, b) {
  if (a.taken_at !== b.taken_at) return (a.taken_at ?? '') > (b.taken_at ?? '');
  return Number(a.id) > Number(b.id);
}

function addItem(item, { live = false } = {}) {
  if (!item || gallery.tiles.has(key(item.id))) return;
  let index = gallery.items.length; // a page's items come in order
  if (live) { // a new file goes where its date puts it, as a reload would show it
    index = gallery.items.findIndex((other) => comesBefore(item, other));
    if (index < 0 && gallery.cursor) return; // older than all shown: it comes with "Load more"
    if (index < 0) index = gallery.items.length;
  }
  const tile = renderTile(item);
  gallery.tiles.set(key(item.id), tile);
  const next = gallery.items[index];
  gallery.items.splice(index, 0, item);
  if (next) gallery.tiles.get(key(next.id)).before(tile);
  else $('grid').append(tile);
}

function removeItem(id) {
  const tile = gallery.tiles.get(key(id));
  if (!tile) return;
  tile.remove();
  gallery.tiles.delete(key(id));
  gallery.items = gallery.items.filter((item) => key(item.id) !== key(id));
  if (viewingId === key(id)) $('viewer').close();
}

function replaceItem(oldId, news, { sameMedia = false } = {}) {
  if (key(oldId) !== key(news.id)) removeItem(news.id);
  const tile = gallery.tiles.get(key(oldId));
  if (!tile) return;
  const before = gallery.items[indexOf(oldId)];
  const item = before?.rev && !news.rev ? { ...news, rev: before.rev } : news; // still edited
  const fresh = renderTile(item);
  tile.replaceWith(fresh);
  gallery.tiles.delete(key(oldId));
  gallery.tiles.set(key(item.id), fresh);
  gallery.items = gallery.items.map((old) => (key(old.id) === key(oldId) ? item : old));
  if (viewingId === key(oldId)) showInViewer(item, { sameMedia });
}

function resetGallery() {
  gallery.items = [];
  gallery.tiles.clear();
  gallery.cursor = null;
  $('grid').replaceChildren();
}

async function loadPage({ fresh = false } = {}) {
  const generation = fresh ? ++gallery.generation : gallery.generation;
  const query = new URLSearchParams({ limit: String(PAGE_SIZE) });
  if (!fresh && gallery.cursor) query.set('cursor', gallery.cursor);
  const more = $('more');
  more.disabled = true;
  gallery.loading = true;
  try {
    const page = await api(`/api/gallery?${query}`);
    if (generation !== gallery.generation) return;
    if (fresh) resetGallery();
    for (const item of page?.items ?? []) addItem(item);
    gallery.cursor = page?.next_cursor ?? null;
  } catch (error) {
    if (generation !== gallery.generation) return;
    if (isUnauthorized(error)) notPaired();
    else showError(banner, error);
  } finally {
    if (generation === gallery.generation) {
      gallery.loading = false;
      $('gallery-loading').hidden = true;
      more.disabled = false;
      more.hidden = !gallery.cursor;
      refreshEmpty();
      flushPendingEvents();
    }
  }
}

/* ---------- Viewer ---------- */

function viewerFile(item, note) {
  return el('div', { class: 'viewer-file' },
    el('span', { class: 'viewer-file-name', text: item.name }),
    note ? el('span', { class: 'viewer-file-note', text: note }) : null,
    el('a', { class: 'send', text: 'Download', attrs: { href: item.path, download: item.name } }));
}

function viewerMedia(item) {
  let media;
  const src = current(item.path, item);
  if (item.type === 'image') media = el('img', { attrs: { src, alt: item.name } });
  else if (item.type === 'video') media = el('video', { attrs: { src, controls: true, playsinline: true, preload: 'metadata' } });
  else return viewerFile(item);
  // A TIFF, a HEIC photo or a video this browser cannot show: say so, and offer the file.
  media.addEventListener('error', () => {
    media.replaceWith(viewerFile(item, `This browser cannot show this ${item.type}.`));
  }, { once: true });
  return media;
}

function viewerMeta(item) {
  return [formatSize(item.size), item.taken_at ? formatDate(item.taken_at) : ''].filter(Boolean).join(' · ');
}

function showInViewer(item, { sameMedia = false } = {}) {
  viewingId = key(item.id);
  $('viewer-name').textContent = item.name;
  $('viewer-meta').textContent = viewerMeta(item);
  // A poster or size that arrived later must not restart the video being watched.
  if (!sameMedia) $('viewer-media').replaceChildren(viewerMedia(item));
  const index = indexOf(item.id);
  const [prev, next, focused] = [$('viewer-prev'), $('viewer-next'), document.activeElement];
  prev.disabled = index <= 0;
  next.disabled = index < 0 || (index >= gallery.items.length - 1 && !gallery.cursor);
  // The button that reached the end is hidden now and would take the focus out of the
  // dialog (and the arrow keys with it): hand it to the other one, or to Close.
  if ((focused === prev || focused === next) && focused.disabled) {
    const other = focused === prev ? next : prev;
    (other.disabled ? $('viewer-close') : other).focus();
  }
}

function openViewer(id) {
  const item = gallery.items[indexOf(id)];
  if (!item) return;
  showInViewer(item);
  if (!$('viewer').open) $('viewer').showModal();
}

async function step(offset) {
  let index = indexOf(viewingId);
  if (index < 0) return;
  if (index + offset >= gallery.items.length && gallery.cursor && !gallery.loading) {
    await loadPage(); // past the last item shown: the next page holds the next one
    index = indexOf(viewingId);
  }
  const next = gallery.items[index + offset];
  if (index >= 0 && next) showInViewer(next);
}

function closeViewer() {
  viewingId = null;
  $('viewer-media').replaceChildren();
}

function onViewerKey(event) {
  if (event.target instanceof HTMLMediaElement) return;
  if (event.key === 'ArrowLeft') step(-1);
  else if (event.key === 'ArrowRight') step(1);
  else return;
  event.preventDefault();
}

/* ---------- Uploads ---------- */

function uploadRow(file) {
  const progress = el('progress', { attrs: { max: '1', value: '0', 'aria-label': `Progress of ${file.name}` } });
  const state = el('span', { class: 'upload-state', text: 'Waiting…' });
  const row = el('li', { class: 'upload' }, el('span', { class: 'upload-name', text: file.name }), state, progress);
  return { file, row, progress, state };
}

function updateTotal() {
  const line = $('upload-total');
  const failed = uploads.failed ? ` · ${uploads.failed} failed` : '';
  line.textContent = `${uploads.sent} of ${uploads.total} sent${failed}`;
  line.hidden = uploads.total === 0;
}

function outcome(status, body) {
  if (status === 0) return { ok: false, message: NETWORK_MESSAGE };
  const file = body?.files?.[0];
  if (file?.ok) return { ok: true, message: file.duplicate ? 'Already on the PC ✓' : 'Sent ✓', item: file.item };
  if (file) return { ok: false, message: file.message || 'The PC refused this file.' };
  return { ok: false, message: body?.message || `Upload failed (HTTP ${status}).` };
}

function finishUpload(job, result) {
  job.state.textContent = result.message;
  job.row.classList.add(result.ok ? 'done' : 'failed');
  job.progress.value = result.ok ? 1 : job.progress.value;
  if (result.ok) uploads.sent += 1;
  else uploads.failed += 1;
  if (result.item) addItem(result.item, { live: true });
  refreshEmpty();
  updateTotal();
  uploads.active -= 1;
  pumpUploads();
}

function startUpload(job) {
  const xhr = new XMLHttpRequest();
  xhr.open('POST', '/api/upload');
  xhr.responseType = 'json';
  xhr.setRequestHeader('Accept', 'application/json');
  xhr.upload.addEventListener('progress', (event) => {
    if (event.lengthComputable) job.progress.value = event.loaded / event.total;
  });
  xhr.upload.addEventListener('load', () => { job.state.textContent = 'Saving…'; });
  xhr.addEventListener('load', () => {
    const ended = xhr.status === 401; // the pairing ended (revoked, expired): send no more
    if (ended) endUploads('Not sent: this device is no longer paired.');
    finishUpload(job, outcome(xhr.status, xhr.response));
    if (ended) notPaired();
  });
  xhr.addEventListener('error', () => finishUpload(job, outcome(0, null)));
  xhr.addEventListener('abort', () => finishUpload(job, { ok: false, message: 'Cancelled.' }));
  const form = new FormData();
  form.append('modified', String(job.file.lastModified));
  form.append('size', String(job.file.size)); // lets the PC's overview draw a true progress bar
  form.append('file', job.file, job.file.name);
  job.state.textContent = 'Sending…';
  xhr.send(form);
}

function pumpUploads() {
  while (uploads.active < MAX_PARALLEL_UPLOADS && uploads.queue.length) {
    uploads.active += 1;
    startUpload(uploads.queue.shift());
  }
}

function endUploads(message) {
  for (const job of uploads.queue.splice(0)) {
    job.state.textContent = message;
    job.row.classList.add('failed');
    uploads.failed += 1;
  }
  updateTotal();
}

function isUploading() {
  return uploads.active > 0 || uploads.queue.length > 0;
}

function queueFiles(files) {
  if (!files.length) return;
  if (!isUploading()) {
    Object.assign(uploads, { total: 0, sent: 0, failed: 0 });
    $('uploads').replaceChildren();
  }
  for (const file of files) {
    const job = uploadRow(file);
    $('uploads').append(job.row);
    uploads.queue.push(job);
    uploads.total += 1;
  }
  updateTotal();
  pumpUploads();
}

/* ---------- Live events ---------- */

function applyEvent(type, data) {
  if (type === 'file.added') addItem(data.item, { live: true });
  else if (type === 'file.updated' && data.item) replaceItem(data.item.id, edited(data.item), { sameMedia: true });
  else if (type === 'file.removed') removeItem(data.id);
  else if (type === 'file.moved' && data.item) replaceItem(data.id ?? data.item.id, data.item);
  else return;
  refreshEmpty();
}

function flushPendingEvents() {
  const pending = gallery.pending.splice(0);
  for (const [type, data] of pending) applyEvent(type, data);
}

function onEvent(type, data) {
  // Events that arrive while a page is on its way wait for it, so nothing lands twice or is lost.
  if (gallery.loading) gallery.pending.push([type, data]);
  else applyEvent(type, data);
}

function listen() {
  events = connectEvents({
    onEvent,
    onResync: () => loadPage({ fresh: true }),
    onState: (state) => showState($('live'), state),
    onUnpaired: notPaired,
  });
}

/* ---------- Start ---------- */

function showWho(me) {
  const name = me.owner ? 'This PC' : me.device_name || 'This device';
  $('title').textContent = `lanpair · ${name}`;
  document.title = `lanpair · ${name}`;
}

/** On the PC's IP, point a paired device at its .local address (pair-confirm hands it over). */
function offerBookmark(me) {
  const onIp = /^[\d.]+$|^\[/.test(location.hostname);
  $('bookmark-offer').hidden = me.owner || !onIp;
}

function bindEvents() {
  const input = $('files');
  input.addEventListener('change', () => {
    queueFiles(Array.from(input.files ?? []));
    input.value = '';
  });
  $('more').addEventListener('click', () => loadPage());
  $('grid').addEventListener('click', (event) => {
    const tile = event.target.closest('[data-id]');
    if (tile) openViewer(tile.dataset.id);
  });
  const viewer = $('viewer');
  viewer.addEventListener('close', closeViewer);
  viewer.addEventListener('keydown', onViewerKey);
  viewer.addEventListener('click', (event) => { if (event.target === viewer) viewer.close(); });
  $('viewer-close').addEventListener('click', () => viewer.close());
  $('viewer-prev').addEventListener('click', () => step(-1));
  $('viewer-next').addEventListener('click', () => step(1));
  window.addEventListener('beforeunload', (event) => {
    if (!isUploading()) return;
    event.preventDefault();
    event.returnValue = '';
  });
}

async function init() {
  let me;
  try {
    me = await api('/api/me');
  } catch (error) {
    if (isUnauthorized(error)) notPaired();
    else showError(banner, error);
    return;
  }
  showWho(me);
  offerBookmark(me);
  bindEvents();
  $('app').hidden = false;
  gallery.loading = true;
  listen();
  loadPage({ fresh: true });
}

init();
