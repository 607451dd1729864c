// The dashboard: asks for a token if the server wants one, opens the event
// stream, loads what is there, and hands every event to the views.
import { ApiError, get, onUnauthorized, refused, setToken, token } from './api.js';
import { Agents } from './agents.js';
import { Chart } from './chart.js';
import { CommandsTable } from './commands.js';
import { Counts } from './counts.js';
import { Detail } from './detail.js';
import { $ } from './dom.js';
import { follow } from './stream.js';
import { submitForm } from './submit.js';

const detail = new Detail();
const openCommand = (id) => void detail.open(id);
const counts = new Counts();
const chart = new Chart();
const table = new CommandsTable(openCommand);
const agents = new Agents(openCommand);
submitForm(openCommand);

let stream = null;

function setConn(state, text = state) {
  const c = $('conn');
  c.dataset.state = state;
  c.textContent = text;
}

function banner(text) {
  const b = $('banner');
  b.textContent = text ?? '';
  b.hidden = !text;
}

/** Everything from the server again: at start, and after a `reset`. */
async function loadAll() {
  await Promise.all([counts.load(), table.load(), agents.load(), chart.backfill()]);
}

function onFrame(f) {
  if (f.event === 'reset') {
    void loadAll().catch(showError);
    return;
  }
  let view;
  try {
    view = JSON.parse(f.data);
  } catch {
    return;
  }
  counts.apply(f.event, view);
  chart.add(view);
  table.apply(f.event, view);
  agents.apply(f.event);
  detail.apply(view);
}

function showError(err) {
  if (err instanceof ApiError && refused(err.status)) return; // the token dialog says it
  banner(`The server answered with an error: ${err.message}`);
}

async function start() {
  banner(null);
  stream?.stop();
  try {
    await get('/agents'); // does the server want a (different) token?
  } catch (err) {
    if (err instanceof ApiError && refused(err.status)) return;
    setConn('down', 'unreachable');
    banner(`Cannot reach the keel server: ${err.message}. Retrying…`);
    setTimeout(() => void start(), 3000);
    return;
  }
  $('token-button').hidden = !token();
  // The stream first, then the lists: nothing that happens in between is missed.
  stream = follow('/events', {
    onFrame,
    onState: (s) => setConn(s, s === 'live' ? 'live' : s === 'reconnecting' ? 'reconnecting…' : 'token refused'),
  });
  await stream.opened;
  await loadAll().catch(showError);
}

function askToken(message) {
  stream?.stop();
  setConn('down', 'needs token');
  const dialog = $('token-dialog');
  const error = $('token-error');
  error.textContent = message ?? '';
  error.hidden = !message;
  if (message) banner(message);
  if (!dialog.open) dialog.showModal();
  dialog.querySelector('input').focus();
}

$('token-form').addEventListener('submit', (e) => {
  e.preventDefault();
  const value = e.target.elements.token.value.trim();
  if (!value) return;
  setToken(value);
  e.target.elements.token.value = '';
  $('token-dialog').close();
  void start();
});
$('token-dialog').addEventListener('cancel', (e) => e.preventDefault()); // nothing works without it
$('token-button').addEventListener('click', () => {
  setToken(null);
  askToken(null);
});

onUnauthorized((status) => {
  if ($('token-dialog').open) return; // several calls refused at once: one question
  const had = token();
  setToken(null);
  if (status === 403) askToken('That token is not allowed here (403): it is the agent token. The dashboard needs the client token.');
  else askToken(had ? 'The server refused that token (401). Enter the right one.' : null);
});

void start();
