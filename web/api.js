export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
  }
}

async function readJson(response) {
  try {
    return await response.json();
  } catch {
    return null;
  }
}

export async function api(path, { method = 'GET', body } = {}) {
  const init = { method, credentials: 'same-origin', headers: { Accept: 'application/json' } };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch {
    throw new ApiError(0, 'network', 'Could not reach lanpair. Check that the PC is on and on the same network.');
  }
  const data = await readJson(response);
  if (!response.ok) {
    const code = data?.error ?? 'http_error';
    const message = data?.message ?? `Request failed (HTTP ${response.status}).`;
    throw new ApiError(response.status, code, message);
  }
  return data;
}

export function el(tag, { class: className, text, attrs = {} } = {}, ...children) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  for (const [name, value] of Object.entries(attrs)) {
    if (value !== undefined && value !== null && value !== false) node.setAttribute(name, value === true ? '' : String(value));
  }
  node.append(...children.flat().filter((child) => child !== null && child !== undefined && child !== false));
  return node;
}

/**
 * A file's URL as the page should load it. An item edited in place keeps its URLs; the
 * event that says so gets a `rev`, which makes them new to the browser's image cache.
 */
export function current(url, item) {
  return url && item.rev ? `${url}?v=${item.rev}` : url;
}

/** Mark an item as just edited (its thumbnail and original changed under the same URLs). */
export function edited(item) {
  return { ...item, rev: Date.now() };
}

export function formatDate(iso) {
  if (!iso) return '—';
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return '—';
  return date.toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'short' });
}

/** Turn "403" on an owner page into what to do: open it on the PC itself. */
export function ownerOnly(error, path) {
  if (!(error instanceof ApiError) || error.status !== 403) return error;
  const host = location.port ? `localhost:${location.port}` : 'localhost';
  return { message: `This page only works on the PC running lanpair (open it at ${location.protocol}//${host}${path}).` };
}

export function formatSize(bytes) {
  if (!Number.isFinite(bytes)) return '';
  const units = ['B', 'KB', 'MB', 'GB', 'TB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1000 && unit < units.length - 1) {
    value /= 1000;
    unit += 1;
  }
  return `${value.toFixed(unit && value < 10 ? 1 : 0)} ${units[unit]}`;
}

/** A dot and a word: is the device connected right now? (No `online` field means no.) */
export function presence(device) {
  const online = device.online === true;
  return el('span', { class: `presence ${online ? 'presence-on' : 'presence-off'}`, text: online ? 'online' : 'offline' });
}

/** A button that asks, then revokes a device's pairing (the owner's pages). */
export function revokeButton(device, { onDone, onError }) {
  const name = device.device_name || device.device_id;
  const button = el('button', { class: 'danger', text: 'Revoke', attrs: { type: 'button', 'aria-label': `Revoke ${name}` } });
  button.addEventListener('click', async () => {
    if (!confirm(`Revoke "${name}"? It will no longer be able to send photos.`)) return;
    button.disabled = true;
    try {
      await api(`/api/pairing/revoke/${encodeURIComponent(device.device_id)}`, { method: 'POST', body: {} });
      onDone();
    } catch (error) {
      button.disabled = false;
      onError(error);
    }
  });
  return button;
}

export function showError(banner, error) {
  banner.textContent = error?.message || 'Something went wrong.';
  banner.hidden = false;
}

export function clearError(banner) {
  banner.textContent = '';
  banner.hidden = true;
}
