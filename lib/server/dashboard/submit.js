// The submit form: a type, its payload as JSON, and any further fields the
// server accepts (priority, retries, ... where it has them), merged in.
import { post } from './api.js';
import { $, el, shortId } from './dom.js';

const EXAMPLES = { DELAY: '{"ms": 1000}', HTTP_GET_JSON: '{"url": "https://example.com/data.json"}' };

export function submitForm(openCommand) {
  const form = $('submit-form');
  const out = $('submit-result');
  form.elements.type.addEventListener('change', () => (form.elements.payload.value = EXAMPLES[form.elements.type.value] ?? '{}'));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    out.className = 'muted';
    let body;
    try {
      body = { type: form.elements.type.value, payload: JSON.parse(form.elements.payload.value) };
      const extra = form.elements.extra.value.trim();
      if (extra) Object.assign(body, JSON.parse(extra));
    } catch (err) {
      out.className = 'error';
      out.textContent = `not JSON: ${err.message}`;
      return;
    }
    try {
      const { commandId } = await post('/commands', body);
      out.replaceChildren('submitted ', el('button', { type: 'button', class: 'link mono', onclick: () => openCommand(commandId) }, shortId(commandId)));
    } catch (err) {
      out.className = 'error';
      out.textContent = err.body && err.body.field ? `${err.body.field}: ${err.message}` : err.message;
    }
  });
}
