// Commands by shown status: read from /metrics, then kept current from the
// event stream. An event names the transition and the status after it, which
// is enough to know the status before it; an event this page does not know
// (a newer server) makes it read /metrics again instead.
import { counts as fetchCounts } from './api.js';
import { $ } from './dom.js';

const STATUSES = ['PENDING', 'RUNNING', 'COMPLETED', 'FAILED'];

// The shown status before an event, from the event and the internal state
// after it (see the FSM's table in docs/design.md). ASSIGNED, SCHEDULED and
// RETRY_WAIT all show as PENDING.
function statusBefore(event, state) {
  switch (event) {
    case 'submit': return null;
    case 'claim': case 'start': case 'due': return 'PENDING';
    case 'claim-start': return 'PENDING';
    // Under claim-and-start a release gives back a RUNNING command (ASSIGNED only
    // in journals from before it; the 30 s re-read of /metrics corrects such a one).
    case 'release': return 'RUNNING';
    case 'finish': case 'timeout': return 'RUNNING';
    case 'expire': return state === 'PENDING' ? 'PENDING' : 'RUNNING';
    case 'cancel': return state === 'RUNNING' ? 'RUNNING' : 'PENDING';
    default: return undefined;
  }
}

export class Counts {
  by = null;
  resync = null;
  frame = null;

  constructor() {
    // The first read of /metrics and the events in flight around it can
    // disagree by the odd command; reading it again now and then settles that.
    setInterval(() => this.by && void this.load().catch(() => {}), 30_000);
  }

  async load() {
    this.by = await fetchCounts();
    this.render();
  }

  apply(event, view) {
    if (!this.by) return;
    const before = statusBefore(event, view.state);
    if (before === undefined) {
      clearTimeout(this.resync);
      this.resync = setTimeout(() => void this.load().catch(() => {}), 300);
      return;
    }
    if (before === view.status) return;
    if (before !== null) this.by[before] = Math.max(0, (this.by[before] ?? 0) - 1);
    this.by[view.status] = (this.by[view.status] ?? 0) + 1;
    // At thousands of events a second, draw once a frame, not once an event.
    this.frame ??= requestAnimationFrame(() => {
      this.frame = null;
      this.render();
    });
  }

  render() {
    for (const s of STATUSES) $(`count-${s}`).textContent = (this.by?.[s] ?? 0).toLocaleString();
  }
}
