// Prometheus text exposition for GET /metrics. Counters live here; gauges are
// read from the store, the journal and the agent registry at scrape time.
import type { JournalStats } from '../../state/journal.ts';
import type { StoreCounts } from '../../state/store.ts';

export interface MetricsSources {
  counts: StoreCounts;
  /** The file store's journal; undefined for a store without one. */
  journal: { stats: JournalStats; bytesOnDisk: number } | undefined;
  /** The journal cannot be written until the disk has space: writes are refused. */
  diskFull: boolean;
  agentsOnline: number;
  /** Command types some online agent runs. */
  runnableTypes: ReadonlySet<string>;
  leases: number;
  claimsWaiting: number;
  eventStreams: number;
  eventStreamsCutOff: number;
  eventsHeld: number;
}

export class HttpMetrics {
  /** route -> status code -> requests: counted per request, so no key string is built for it. */
  private readonly requests = new Map<string, Map<number, number>>();

  count(route: string, code: number): void {
    let codes = this.requests.get(route);
    if (codes === undefined) this.requests.set(route, (codes = new Map()));
    codes.set(code, (codes.get(code) ?? 0) + 1);
  }

  render(src: MetricsSources): string {
    const out: string[] = [];
    const metric = (name: string, type: string, help: string, rows: Array<[string, number]>): void => {
      out.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
      for (const [labels, v] of rows) out.push(`${name}${labels} ${v}`);
    };
    metric('keel_commands', 'gauge', 'Commands by internal FSM state.',
      Object.entries(src.counts.byState).map(([s, n]) => [`{state="${s}"}`, n]));
    metric('keel_commands_forgotten_total', 'counter', 'Final commands retention forgot (replayed and live) since start.', [['', src.counts.forgotten]]);
    metric('keel_pending', 'gauge', 'PENDING commands by type.',
      Object.entries(src.counts.pendingByType).map(([t, n]) => [`{type="${t}"}`, n]));
    metric('keel_pending_unrunnable', 'gauge', 'PENDING commands of a type that no online agent runs: they wait until one does.',
      Object.entries(src.counts.pendingByType).map(([t, n]) => [`{type="${t}"}`, src.runnableTypes.has(t) ? 0 : n]));
    metric('keel_transitions_total', 'counter', 'Command transitions applied (replayed and live) since start.', [['', src.counts.transitions]]);
    const j = src.journal;
    if (j) {
      metric('keel_journal_fsyncs_total', 'counter', 'fdatasync calls on the journal since start.', [['', j.stats.fsyncs]]);
      metric('keel_journal_fsync_seconds_total', 'counter', 'Time spent in journal fdatasync since start.', [['', j.stats.fsyncMicros / 1e6]]);
      metric('keel_journal_records_total', 'counter', 'Journal records written since start.', [['', j.stats.records]]);
      metric('keel_journal_written_bytes_total', 'counter', 'Journal bytes written since start.', [['', j.stats.bytes]]);
      metric('keel_disk_full', 'gauge', '1 while the journal cannot be written for lack of space: writes answer 503, reads go on.', [['', src.diskFull ? 1 : 0]]);
      metric('keel_disk_full_episodes_total', 'counter', 'Times a journal write met a full disk since start.', [['', j.stats.diskFullEpisodes]]);
      metric('keel_journal_bytes', 'gauge', 'Disk space the journal segments and snapshot take (allocated blocks).', [['', j.bytesOnDisk]]);
    }
    metric('keel_agents_online', 'gauge', 'Agents heard from within the lease timeout.', [['', src.agentsOnline]]);
    metric('keel_leases', 'gauge', 'Leases the server is timing.', [['', src.leases]]);
    metric('keel_claims_waiting', 'gauge', 'Agent claims parked on the server, waiting for work.', [['', src.claimsWaiting]]);
    metric('keel_event_streams', 'gauge', 'Open event streams (GET /events, GET /commands/:id/events?follow=1).', [['', src.eventStreams]]);
    metric('keel_event_streams_cut_off_total', 'counter', 'Event streams closed because their reader fell behind.', [['', src.eventStreamsCutOff]]);
    metric('keel_events_held', 'gauge', 'Recent transitions held for streams to resume from.', [['', src.eventsHeld]]);
    metric('keel_http_requests_total', 'counter', 'HTTP requests by route and status code.',
      [...this.requests].flatMap(([route, codes]) => [...codes].map(([code, n]): [string, number] => [`{route="${route}",code="${code}"}`, n])));
    return `${out.join('\n')}\n`;
  }
}
