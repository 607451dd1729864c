// The few signatures keel uses from its untyped runtime dependencies, so the
// project needs no @types packages beyond @types/node.
declare module 'proper-lockfile' {
  export interface LockOptions {
    stale?: number;
    update?: number;
    retries?: number | { retries: number; minTimeout?: number; maxTimeout?: number };
    realpath?: boolean;
    lockfilePath?: string;
    onCompromised?: (err: Error) => void;
  }
  export function lock(file: string, options?: LockOptions): Promise<() => Promise<void>>;
  const lockfile: { lock: typeof lock };
  export default lockfile;
}

declare module 'write-file-atomic' {
  interface Options { fsync?: boolean; mode?: number; encoding?: BufferEncoding }
  const writeFileAtomic: {
    (file: string, data: string | Uint8Array, options?: Options): Promise<void>;
    sync(file: string, data: string | Uint8Array, options?: Options): void;
  };
  export default writeFileAtomic;
}

declare module 'pg' {
  import type { EventEmitter } from 'node:events';
  export interface ClientConfig {
    connectionString?: string;
    connectionTimeoutMillis?: number;
    application_name?: string;
    host?: string;
    port?: number;
    user?: string;
    password?: string;
    database?: string;
  }
  export interface PoolConfig extends ClientConfig {
    max?: number;
    idleTimeoutMillis?: number;
  }
  export interface QueryResult<R = Record<string, unknown>> {
    rows: R[];
    rowCount: number | null;
  }
  export interface Notification {
    channel: string;
    payload?: string;
  }
  export interface Queryable {
    query<R = Record<string, unknown>>(text: string, values?: unknown[]): Promise<QueryResult<R>>;
  }
  export class Client extends EventEmitter implements Queryable {
    constructor(config?: ClientConfig | string);
    connect(): Promise<void>;
    end(): Promise<void>;
    query<R = Record<string, unknown>>(text: string, values?: unknown[]): Promise<QueryResult<R>>;
  }
  export interface PoolClient extends Queryable {
    release(err?: Error | boolean): void;
  }
  export class Pool extends EventEmitter implements Queryable {
    constructor(config?: PoolConfig);
    connect(): Promise<PoolClient>;
    end(): Promise<void>;
    query<R = Record<string, unknown>>(text: string, values?: unknown[]): Promise<QueryResult<R>>;
    readonly totalCount: number;
    readonly idleCount: number;
  }
  export const types: { setTypeParser(oid: number, parse: (text: string) => unknown): void };
  const pg: { Pool: typeof Pool; Client: typeof Client; types: typeof types };
  export default pg;
}
