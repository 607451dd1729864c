#!/usr/bin/env node
// The `keel` bin: Node 20 runs no .ts on its own, so register tsx's loader in
// this process, then run cli.ts.
import { register } from 'tsx/esm/api';

register();
await import('../../cli.ts');
