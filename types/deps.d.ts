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
