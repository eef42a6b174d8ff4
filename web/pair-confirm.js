import { api, formatDate, showError, clearError } from './api.js';

const $ = (id) => document.getElementById(id);
const banner = $('error');
const DEVICE_ID_KEY = 'lanpair.client_device_id';

function readFragment() {
  const params = new URLSearchParams(location.hash.slice(1));
  if (location.hash) history.replaceState(null, '', location.pathname);
  return {
    token: params.get('t'),
    host: params.get('h'),
    fingerprint: params.get('fp'),
    pcId: params.get('id'),
    handoff: params.get('handoff'),
    bookmark: params.has('bookmark'),
  };
}

function randomId() {
  if (crypto.randomUUID) return crypto.randomUUID();
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

function clientDeviceId() {
  try {
    let id = localStorage.getItem(DEVICE_ID_KEY);
    if (!id) {
      id = randomId();
      localStorage.setItem(DEVICE_ID_KEY, id);
    }
    return id;
  } catch {
    return randomId();
  }
}

function guessDeviceName() {
  const ua = navigator.userAgent;
  if (/Macintosh/.test(ua) && navigator.maxTouchPoints > 1) return 'iPad';
  const guesses = [
    [/iPhone/, 'iPhone'],
    [/iPad/, 'iPad'],
    [/Pixel [\w ]+?(?=[;)])/, null],
    [/SM-[A-Z]\d+|Galaxy/, 'Samsung Galaxy'],
    [/Android.*Mobile/, 'Android phone'],
    [/Android/, 'Android tablet'],
    [/Macintosh/, 'Mac'],
    [/Windows/, 'Windows PC'],
    [/CrOS/, 'Chromebook'],
    [/Linux/, 'Linux computer'],
  ];
  for (const [pattern, name] of guesses) {
    const match = ua.match(pattern);
    if (match) return (name ?? match[0].trim()).slice(0, 64);
  }
  return 'My device';
}

function isOtherPc(info, fragment) {
  if (fragment.pcId && info.device_id && info.device_id !== fragment.pcId) return true;
  return Boolean(fragment.fingerprint && info.fingerprint && info.fingerprint !== fragment.fingerprint);
}

function explain(error) {
  if (error.status === 429) return 'Too many attempts, wait a minute and try again.';
  if ([401, 404, 409, 410].includes(error.status) || /token|expired|used/i.test(error.code ?? '')) {
    return `${error.message} Ask the PC for a new QR code.`;
  }
  return error.message;
}

/* ---------- The .local address: a one-time hand-off carries the pairing over ---------- */

const handoff = { url: null, freshUntil: 0 };

async function mintHandoff() {
  const result = await api('/api/pairing/handoff', { method: 'POST', body: {} });
  // Its lifetime is counted on this device's clock: the phone's and the PC's need not agree.
  Object.assign(handoff, { url: result.url, freshUntil: Date.now() + (result.expires_in_s - 10) * 1000 });
  return result;
}

async function offerBookmark(info) {
  if (!info.hostname || location.hostname === info.hostname) return false;
  let offer;
  try {
    offer = await mintHandoff();
  } catch {
    return false; // without the offer this device simply stays paired on this address
  }
  const link = $('bookmark-link');
  link.textContent = offer.address;
  link.href = offer.url;
  link.addEventListener('click', async (event) => {
    if (Date.now() < handoff.freshUntil) {
      handoff.freshUntil = 0; // followed once: a second tap mints a fresh one
      return;
    }
    event.preventDefault();
    try {
      await mintHandoff();
      handoff.freshUntil = 0;
      link.href = handoff.url;
      location.assign(handoff.url);
    } catch (error) {
      showError(banner, error);
    }
  });
  $('bookmark').hidden = false;
  return true;
}

async function redeemHandoff(token) {
  $('handing-over').hidden = false;
  try {
    await api('/api/pairing/handoff/redeem', { method: 'POST', body: { handoff_token: token } });
  } catch (error) {
    // A link followed twice (back, reload) finds this address already paired: carry on.
    const paired = await api('/api/me').then(() => true, () => false);
    if (!paired) {
      $('handing-over').hidden = true;
      showError(banner, { message: error.status === 429 ? explain(error) : error.message });
      return;
    }
  }
  location.replace('/explorer');
}

/** Reached from the explorer: offer the .local address to an already paired device. */
async function offerToPairedDevice(info) {
  const paired = await api('/api/me').then((me) => !me.owner, () => false);
  if (!paired || !(await offerBookmark(info))) location.replace('/explorer');
  else $('bookmark-back').hidden = false;
}

/* ---------- Pairing ---------- */

async function confirmPairing(token, pcName, info) {
  const button = $('pair');
  const input = $('device-name');
  button.disabled = true;
  button.textContent = 'Pairing…';
  clearError(banner);
  try {
    const result = await api('/api/pairing/confirm', {
      method: 'POST',
      body: { pairing_token: token, device_name: input.value.trim(), device_id: clientDeviceId() },
    });
    $('pair-form').hidden = true;
    $('done-message').textContent =
      `Paired ✓ — ${result.device_name} can now send photos to ${pcName}. Pairing valid until ${formatDate(result.expires_at)}.`;
    $('done').hidden = false;
    offerBookmark(info);
  } catch (error) {
    showError(banner, { message: explain(error) });
    button.disabled = false;
    button.textContent = 'Pair';
  }
}

function showForm(token, pcName, info) {
  const form = $('pair-form');
  const input = $('device-name');
  $('pair-title').textContent = `Pair this device with ${pcName}`;
  input.value = guessDeviceName();
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    input.value = input.value.trim();
    if (form.reportValidity()) confirmPairing(token, pcName, info);
  });
  form.hidden = false;
}

async function init() {
  const fragment = readFragment();
  if (fragment.handoff) {
    await redeemHandoff(fragment.handoff);
    return;
  }
  if (!fragment.token && !fragment.bookmark) {
    $('no-token').hidden = false;
    return;
  }
  let info;
  try {
    info = await api('/api/info');
  } catch (error) {
    showError(banner, error);
    return;
  }
  if (fragment.bookmark) {
    await offerToPairedDevice(info);
    return;
  }
  if (isOtherPc(info, fragment)) {
    $('mismatch').hidden = false;
    return;
  }
  showForm(fragment.token, info.name || fragment.host || 'this PC', info);
}

init();
