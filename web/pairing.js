import { api, el, formatDate, ownerOnly, presence, revokeButton, showError, clearError } from './api.js';
import { connectEvents, liveDevices, showState } from './events.js';

const $ = (id) => document.getElementById(id);
const banner = $('error');
let countdownTimer = null;
let currentUrl = '';

const explain = (error) => ownerOnly(error, '/pairing');

function formatRemaining(ms) {
  const total = Math.max(0, Math.ceil(ms / 1000));
  const minutes = Math.floor(total / 60);
  const seconds = String(total % 60).padStart(2, '0');
  return `${minutes}:${seconds}`;
}

function stopCountdown() {
  clearInterval(countdownTimer);
  countdownTimer = null;
}

function startCountdown(expiresInSeconds) {
  stopCountdown();
  // Count from the server's "seconds left", not its clock: the two clocks may disagree.
  const deadline = Date.now() + expiresInSeconds * 1000;
  const tick = () => {
    const left = deadline - Date.now();
    if (Number.isNaN(deadline) || left <= 0) {
      stopCountdown();
      $('countdown').textContent = 'This code expired';
      $('code').classList.add('expired');
      return;
    }
    $('countdown').textContent = `Expires in ${formatRemaining(left)}`;
  };
  tick();
  countdownTimer = setInterval(tick, 1000);
}

function showCode(data) {
  currentUrl = data.url;
  $('qr').src = data.qr_png;
  $('url').textContent = data.url;
  $('address').textContent = `${data.ip}:${data.port}`;
  $('hostname').textContent = data.hostname ? `(${data.hostname})` : '';
  $('fingerprint').textContent = data.fingerprint || '—';
  $('code').classList.remove('expired');
  $('code-loading').hidden = true;
  $('code-body').hidden = false;
  $('copy').hidden = false;
  startCountdown(data.expires_in_s);
}

async function generate() {
  const button = $('generate');
  button.disabled = true;
  clearError(banner);
  try {
    showCode(await api('/api/pairing/generate', { method: 'POST', body: {} }));
  } catch (error) {
    stopCountdown();
    $('code-loading').textContent = 'No pairing code.';
    $('code-loading').hidden = false;
    $('code-body').hidden = true;
    $('copy').hidden = true;
    showError(banner, explain(error));
  } finally {
    button.disabled = false;
  }
}

function selectUrl() {
  const range = document.createRange();
  range.selectNodeContents($('url'));
  const selection = getSelection();
  selection.removeAllRanges();
  selection.addRange(range);
}

async function copyLink() {
  const button = $('copy');
  try {
    await navigator.clipboard.writeText(currentUrl);
    button.textContent = 'Copied ✓';
  } catch {
    selectUrl();
    button.textContent = 'Press Ctrl+C to copy';
  }
  setTimeout(() => { button.textContent = 'Copy link'; }, 2000);
}

function fact(label, value) {
  return [el('dt', { text: label }), el('dd', { text: value })];
}

const reportError = (error) => showError(banner, explain(error));

function deviceItem(device) {
  const status = device.status || 'unknown';
  return el('li', { class: 'device' },
    el('div', {},
      el('span', { class: 'device-name', text: device.device_name || device.device_id }),
      el('span', { class: `status status-${status}`, text: status }),
      status === 'confirmed' ? presence(device) : null),
    el('dl', {},
      ...fact('Paired', formatDate(device.confirmed_at)),
      ...fact('Expires', formatDate(device.expires_at)),
      ...fact('Last seen', formatDate(device.last_seen)),
      ...fact('Last sync', formatDate(device.last_sync)),
      ...fact('Files', device.file_count ?? 0)),
    status === 'confirmed'
      ? el('div', { class: 'actions' }, revokeButton(device, { onDone: () => devices.reload(), onError: reportError }))
      : null);
}

const devices = liveDevices({ list: $('devices'), empty: $('devices-empty'), render: deviceItem, onError: reportError });

function onEvent(type, data) {
  devices.apply(type, data);
  if (type === 'device.paired') {
    // The code on screen may be the one just used (each code pairs once): show a fresh one.
    $('paired-now').textContent = `✓ ${data.device_name || 'A device'} is paired. Here is a new code for the next one.`;
    $('paired-now').hidden = false;
    generate();
  }
}

$('generate').addEventListener('click', () => {
  $('paired-now').hidden = true;
  generate();
});
$('copy').addEventListener('click', copyLink);
generate();
devices.reload();
connectEvents({
  onEvent,
  onResync: () => devices.reload(),
  onState: (state) => showState($('live'), state),
});
