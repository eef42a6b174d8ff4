import { current, edited, el, formatDate, formatSize, ownerOnly, presence, revokeButton, showError } from './api.js';
import { connectEvents, liveDevices, showState } from './events.js';

const $ = (id) => document.getElementById(id);
const banner = $('error');
const KEEP_ARRIVALS = 20;
const SHOW_FINISHED_UPLOAD_MS = 4000;
const PC_DEVICE = 'pc';
const PLACEHOLDERS = {
  image: '/static/placeholder-image.svg',
  video: '/static/placeholder-video.svg',
  file: '/static/placeholder-file.svg',
};

const uploads = new Map();
const arrivals = new Map();

const reportError = (error) => showError(banner, ownerOnly(error, '/admin'));

/* ---------- Devices ---------- */

function fact(label, value) {
  return [el('dt', { text: label }), el('dd', { text: value })];
}

function deviceRow(device) {
  return el('li', { class: 'device' },
    el('div', { class: 'device-head' },
      el('span', { class: 'device-name', text: device.device_name || device.device_id }),
      presence(device)),
    el('dl', {},
      ...fact('Last sync', formatDate(device.last_sync)),
      ...fact('Files', device.file_count ?? 0)),
    el('div', { class: 'actions' }, revokeButton(device, { onDone: () => devices.reload(), onError: reportError })));
}

const devices = liveDevices({
  list: $('devices'),
  empty: $('devices-empty'),
  render: deviceRow,
  show: (device) => device.status === 'confirmed',
  onError: reportError,
});

function deviceName(item) {
  if (item.device === PC_DEVICE) return 'this PC';
  return devices.devices.get(item.device)?.device_name || item.folder || 'a device';
}

/* ---------- Uploads in progress ---------- */

function refreshUploadsEmpty() {
  $('uploads-empty').hidden = uploads.size > 0;
}

function uploadRow(data) {
  const progress = el('progress', { attrs: { max: '1', 'aria-label': `Progress of ${data.name || 'a file'}` } });
  const state = el('span', { class: 'upload-state' });
  const from = el('span', { class: 'upload-from' });
  const row = el('li', { class: 'upload' },
    el('span', { class: 'upload-name', text: data.name || 'a file' }), state, from, progress);
  return { row, progress, state, from, deviceId: data.device_id, finished: false };
}

function forget(id) {
  uploads.get(id)?.row.remove();
  uploads.delete(id);
  refreshUploadsEmpty();
}

const OUTCOMES = { done: 'Saved ✓', failed: 'Failed', paused: 'Paused' };

// Leave the outcome readable for a moment; this timer only tidies the list.
function settle(id, job, state) {
  job.finished = state !== 'paused'; // a paused (resumable) upload may report again
  job.row.classList.add(state);
  job.state.textContent = OUTCOMES[state];
  if (state === 'done') job.progress.value = 1;
  job.timer = setTimeout(() => { if (uploads.get(id) === job) forget(id); }, SHOW_FINISHED_UPLOAD_MS);
}

function onProgress(data) {
  const id = String(data.upload ?? '');
  if (!id) return;
  let job = uploads.get(id);
  if (job?.finished) return;
  if (!job) {
    job = uploadRow(data);
    uploads.set(id, job);
    $('uploads').prepend(job.row);
    refreshUploadsEmpty();
  }
  clearTimeout(job.timer);
  job.row.classList.remove('paused');
  const bytes = Number.isFinite(data.bytes) ? data.bytes : 0;
  const total = Number.isFinite(data.total) && data.total > 0 ? data.total : null;
  const sent = total === null ? formatSize(bytes) : `${formatSize(bytes)} of ${formatSize(total)}`;
  const sender = data.device_name || (data.device_id ? 'a device' : 'this PC');
  job.from.textContent = `from ${sender} · ${sent}`;
  if (total === null) {
    job.progress.removeAttribute('value'); // unknown size: an indeterminate bar
    job.state.textContent = 'Sending…';
  } else {
    job.progress.value = Math.min(1, bytes / total);
    job.state.textContent = `${Math.floor(Math.min(1, bytes / total) * 100)} %`;
  }
  if (Object.hasOwn(OUTCOMES, data.state)) settle(id, job, data.state);
}

function failUploadsOf(deviceId) {
  for (const [id, job] of uploads) {
    if (job.deviceId === deviceId && !job.finished) settle(id, job, 'failed');
  }
}

/* ---------- Recent arrivals ---------- */

function arrivalRow(item, time) {
  const thumb = el('img', {
    attrs: { src: current(item.thumb, item) || PLACEHOLDERS[item.type] || PLACEHOLDERS.file, alt: '', width: '56', height: '56', decoding: 'async' },
  });
  const meta = [deviceName(item), formatSize(item.size), formatDate(time)].filter(Boolean).join(' · ');
  return el('li', {},
    el('a', { class: 'arrival', attrs: { href: item.path, target: '_blank', rel: 'noopener', title: item.name } },
      thumb,
      el('span', { class: 'arrival-text' },
        el('span', { class: 'arrival-name', text: item.name }),
        el('span', { class: 'arrival-meta', text: meta }))));
}

function refreshArrivalsEmpty() {
  $('arrivals-empty').hidden = arrivals.size > 0;
}

function addArrival(item, time) {
  if (!item || arrivals.has(String(item.id))) return;
  const row = arrivalRow(item, time);
  arrivals.set(String(item.id), { row, time });
  $('arrivals').prepend(row);
  for (const [id, old] of arrivals) {
    if (arrivals.size <= KEEP_ARRIVALS) break;
    old.row.remove();
    arrivals.delete(id);
  }
  refreshArrivalsEmpty();
}

function replaceArrival(oldId, item) {
  const old = arrivals.get(String(oldId));
  if (!old) return;
  const fresh = { row: arrivalRow(item, old.time), time: old.time };
  old.row.replaceWith(fresh.row);
  // Rebuild rather than delete and set, so the oldest arrival stays first in line to go.
  const entries = Array.from(arrivals, ([id, entry]) => (entry === old ? [String(item.id), fresh] : [id, entry]));
  arrivals.clear();
  for (const [id, entry] of entries) arrivals.set(id, entry);
}

function removeArrival(id) {
  arrivals.get(String(id))?.row.remove();
  arrivals.delete(String(id));
  refreshArrivalsEmpty();
}

/* ---------- Live events ---------- */

function onEvent(type, data, event) {
  devices.apply(type, data);
  if (type === 'upload.progress') onProgress(data);
  else if (type === 'file.added') addArrival(data.item, event.time);
  else if (type === 'file.updated' && data.item) replaceArrival(data.item.id, edited(data.item));
  else if (type === 'file.moved' && data.item) replaceArrival(data.id ?? data.item.id, data.item);
  else if (type === 'file.removed') removeArrival(data.id);
  else if (type === 'device.revoked') failUploadsOf(data.device_id);
}

function onResync() {
  // Whatever was sending while we were away has finished by now, or will report again.
  for (const id of Array.from(uploads.keys())) forget(id);
  devices.reload();
}

devices.reload();
connectEvents({ onEvent, onResync, onState: (state) => showState($('live'), state) });
