import { api, ApiError, el, formatDate, showError, clearError } from './api.js';

const $ = (id) => document.getElementById(id);
const banner = $('error');
let countdownTimer = null;
let currentUrl = '';

function explain(error) {
  if (!(error instanceof ApiError) || error.status !== 403) return error;
  const host = location.port ? `localhost:${location.port}` : 'localhost';
  return { message: `This page only works on the PC running lanpair (open it at https://${host}/pairing).` };
}

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

function revokeButton(device) {
  const label = `Revoke ${device.device_name || device.device_id}`;
  const button = el('button', { class: 'danger', text: 'Revoke', attrs: { type: 'button', 'aria-label': label } });
  button.addEventListener('click', () => revoke(device, button));
  return button;
}

function deviceItem(device) {
  const status = device.status || 'unknown';
  return el('li', { class: 'device' },
    el('div', {},
      el('span', { class: 'device-name', text: device.device_name || device.device_id }),
      el('span', { class: `status status-${status}`, text: status })),
    el('dl', {},
      ...fact('Paired', formatDate(device.confirmed_at)),
      ...fact('Expires', formatDate(device.expires_at)),
      ...fact('Last seen', formatDate(device.last_seen)),
      ...fact('Files', device.file_count ?? 0)),
    status === 'confirmed' ? el('div', { class: 'actions' }, revokeButton(device)) : null);
}

async function loadDevices() {
  const button = $('refresh');
  button.disabled = true;
  try {
    const devices = await api('/api/pairing/devices');
    const list = Array.isArray(devices) ? devices : devices?.devices ?? [];
    $('devices').replaceChildren(...list.map(deviceItem));
    $('devices-empty').hidden = list.length > 0;
  } catch (error) {
    showError(banner, explain(error));
  } finally {
    button.disabled = false;
  }
}

async function revoke(device, button) {
  if (!confirm(`Revoke "${device.device_name}"? It will no longer be able to send photos.`)) return;
  button.disabled = true;
  clearError(banner);
  try {
    await api(`/api/pairing/revoke/${encodeURIComponent(device.device_id)}`, { method: 'POST', body: {} });
  } catch (error) {
    showError(banner, error);
  }
  await loadDevices();
}

$('generate').addEventListener('click', generate);
$('copy').addEventListener('click', copyLink);
$('refresh').addEventListener('click', () => { clearError(banner); loadDevices(); });
generate();
loadDevices();
