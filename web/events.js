// The live connection to GET /api/events, shared by every page: nothing refetches on a timer.
import { api, ApiError } from './api.js';

const NOT_PAIRED = 4401;
const GOING_AWAY = 1001;
const FIRST_RETRY_MS = 1000;
const LAST_RETRY_MS = 30_000;

// Jittered (half to all of the step), so phones that lost the PC together do not return together.
function backoff(retries) {
  const ceiling = Math.min(LAST_RETRY_MS, FIRST_RETRY_MS * 2 ** retries);
  return ceiling / 2 + Math.random() * (ceiling / 2);
}

function eventsUrl(since) {
  const scheme = location.protocol === 'https:' ? 'wss://' : 'ws://';
  const query = since === null ? '' : `?since=${encodeURIComponent(since)}`;
  return `${scheme}${location.host}/api/events${query}`;
}

// A refused upgrade looks like any dropped socket; only the API can say "no longer paired".
async function stillPaired() {
  try {
    await api('/api/me');
    return true;
  } catch (error) {
    return !(error instanceof ApiError && error.status === 401);
  }
}

/**
 * Keep a WebSocket to /api/events open until close(). After a drop (or 4408, too slow) it
 * reconnects with backoff and ?since=<last event id>, so nothing is missed; 4401 means the
 * pairing ended: it stops and calls onUnpaired; after 1001 (daemon stopping) it reconnects
 * and calls onResync. A `resync` message (reload everything) also goes to onResync.
 */
export function connectEvents({ onEvent = () => {}, onResync = () => {}, onState = () => {}, onUnpaired = () => {} } = {}) {
  let socket = null;
  let timer = null;
  let lastId = null;
  let retries = 0;
  let stopped = false;
  let resyncOnOpen = false;

  function deliver(message) {
    let event;
    try {
      event = JSON.parse(message.data);
    } catch {
      return;
    }
    if (!event || typeof event.type !== 'string') return;
    const id = Number.isSafeInteger(event.id) ? event.id : null;
    if (event.type === 'resync') {
      if (id !== null) lastId = id;
      onResync();
      return;
    }
    // Ids only grow within one daemon run; a smaller one means the daemon started afresh.
    const freshHub = id !== null && lastId !== null && id <= lastId;
    if (id !== null) lastId = id;
    if (freshHub) onResync();
    onEvent(event.type, event.data ?? {}, event);
  }

  function retryLater(delay) {
    onState('offline');
    clearTimeout(timer);
    timer = setTimeout(open, delay);
  }

  async function closed(ws, event, opened) {
    if (stopped || ws !== socket) return;
    socket = null;
    if (event.code === NOT_PAIRED || (!opened && !(await stillPaired()))) {
      stop();
      onUnpaired();
      return;
    }
    if (stopped) return;
    // A stopping daemon's successor numbers its events from 1: `since` would mean nothing.
    // (4408, too slow, and plain drops keep lastId: the hub replays what came after it.)
    if (event.code === GOING_AWAY) lastId = null;
    // Without an id to replay from, what happened while away can only be learned by reloading.
    if (lastId === null && opened) resyncOnOpen = true;
    retryLater(backoff(retries));
    retries += 1;
  }

  function open() {
    timer = null;
    if (stopped || socket) return;
    onState('connecting');
    const ws = new WebSocket(eventsUrl(lastId));
    let opened = false;
    socket = ws;
    ws.addEventListener('open', () => {
      if (ws !== socket) return;
      opened = true;
      retries = 0;
      onState('live');
      if (resyncOnOpen) {
        resyncOnOpen = false;
        onResync();
      }
    });
    ws.addEventListener('message', (message) => {
      if (ws === socket) deliver(message);
    });
    ws.addEventListener('close', (event) => closed(ws, event, opened));
  }

  // Back on the network, or back in front of the user: try now rather than at the next backoff.
  function retryNow() {
    if (stopped || socket || timer === null || document.visibilityState === 'hidden') return;
    clearTimeout(timer);
    open();
  }

  function stop() {
    stopped = true;
    clearTimeout(timer);
    timer = null;
    window.removeEventListener('online', retryNow);
    document.removeEventListener('visibilitychange', retryNow);
    const ws = socket;
    socket = null;
    ws?.close(1000);
  }

  window.addEventListener('online', retryNow);
  document.addEventListener('visibilitychange', retryNow);
  open();
  return { close: stop };
}

const STATE_TEXT = { live: 'live', connecting: 'connecting…', offline: 'offline · reconnecting…' };

/** Show the connection's state in a `.live` pill: a green dot when events flow. */
export function showState(pill, state) {
  pill.hidden = false;
  pill.className = `live ${state === 'live' ? 'live-on' : 'live-off'}`;
  pill.textContent = STATE_TEXT[state] ?? state;
}

/** Run `action` once, `delayMs` after the last of a burst of calls (many events, one refetch). */
export function debounce(action, delayMs = 100) {
  let timer = null;
  return () => {
    clearTimeout(timer);
    timer = setTimeout(() => {
      timer = null;
      action();
    }, delayMs);
  };
}

const REFETCH_DEVICES_ON = new Set(['device.paired', 'device.revoked', 'file.removed', 'file.moved']);

/**
 * Apply an event to a Map of device records (by device_id) from /api/pairing/devices.
 * Returns the id of the device it changed in place, 'refetch' when only the server can tell
 * (or the device is not known yet), or null when the event does not touch the devices.
 */
function patchDevices(devices, type, data) {
  if (REFETCH_DEVICES_ON.has(type)) return 'refetch';
  if (type === 'file.added') {
    const device = devices.get(data.item?.device);
    if (!device) return null; // the PC's own files, or a device that is not listed
    device.file_count = (device.file_count ?? 0) + 1;
    return device.device_id;
  }
  if (type !== 'device.online' && type !== 'device.offline' && type !== 'device.synced') return null;
  const device = devices.get(data.device_id);
  if (!device) return 'refetch';
  if (type === 'device.synced') device.last_sync = data.last_sync ?? device.last_sync;
  else device.online = type === 'device.online';
  return device.device_id;
}

/**
 * The owner's list of paired devices, drawn into `list` with `render(device)` (one <li> each)
 * and kept current by events: presence, syncs and file counts are patched in place, one row
 * redrawn; pairings, revocations and removals refetch the list, once per burst.
 */
export function liveDevices({ list, empty, render, show = () => true, onError }) {
  const devices = new Map();
  let loading = false;
  let again = false;

  function row(device) {
    const item = render(device);
    item.dataset.deviceId = device.device_id;
    return item;
  }

  function draw(changedId) {
    const device = devices.get(changedId);
    const old = device && list.querySelector(`[data-device-id="${CSS.escape(changedId)}"]`);
    if (old && show(device)) {
      old.replaceWith(row(device));
      return;
    }
    const shown = Array.from(devices.values()).filter(show);
    list.replaceChildren(...shown.map(row));
    empty.hidden = shown.length > 0;
  }

  async function reload() {
    if (loading) {
      again = true;
      return;
    }
    loading = true;
    try {
      const body = await api('/api/pairing/devices');
      devices.clear();
      for (const device of Array.isArray(body) ? body : body?.devices ?? []) devices.set(device.device_id, device);
      draw(null);
    } catch (error) {
      onError(error);
    } finally {
      loading = false;
      if (again) {
        again = false;
        reload();
      }
    }
  }

  const reloadSoon = debounce(reload);

  function apply(type, data) {
    const changed = patchDevices(devices, type, data);
    if (changed === null) return;
    if (loading) again = true; // the answer on its way may predate this event
    if (changed === 'refetch') reloadSoon();
    else draw(changed);
  }

  return { devices, reload, apply };
}
