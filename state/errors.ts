// What the state layer throws about the files it reads. Each error names the
// file, the byte where the trouble is (when there is one) and what the operator
// can do, so a program that cannot open its state directory prints one
// sentence, never a stack trace (lib/startup.ts).

export class StateError extends Error {
  readonly file: string;
  readonly offset: number | undefined;
  readonly remedy: string;
  constructor(file: string, offset: number | undefined, problem: string, remedy: string) {
    super(`${file}: ${problem}. ${remedy}`);
    this.name = 'StateError';
    this.file = file;
    this.offset = offset;
    this.remedy = remedy;
  }
}

/** A journal record that is damaged or does not follow: repairable by cutting there. */
export class CorruptionError extends StateError {
  readonly reason: string;
  constructor(file: string, offset: number, reason: string) {
    super(file, offset, `corrupt journal at byte ${offset}: ${reason}`, 'Start with --repair to cut the journal there (records from that offset on are dropped).');
    this.name = 'CorruptionError';
    this.reason = reason;
  }
}

/** A snapshot that fails its checks. Snapshots are renamed in only once whole, so this is disk damage. */
export class DamagedSnapshotError extends StateError {
  constructor(file: string, offset: number, reason: string) {
    super(file, offset, `damaged snapshot at byte ${offset}: ${reason}`, 'Snapshots are written whole before they are renamed in, so this is disk damage; restore the state directory from a backup.');
    this.name = 'DamagedSnapshotError';
  }
}

/** A file this release cannot read: another format version, or another program's file. */
export class FormatError extends StateError {
  constructor(file: string, problem: string, remedy: string) {
    super(file, undefined, problem, remedy);
    this.name = 'FormatError';
  }
}
