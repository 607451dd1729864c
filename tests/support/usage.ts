// The flags each program's usage text lists, read from the usage itself.
import { USAGE as AGENT_USAGE } from '../../lib/agent/config.ts';
import { SERVER_USAGE } from '../../lib/server/config.ts';

const flagsOf = (usage: string): string[] => [...new Set([...usage.matchAll(/^\s+(--[a-z-]+)/gm)].map((m) => m[1]!))];

export const SERVER_USAGE_FLAGS = flagsOf(SERVER_USAGE);
export const AGENT_USAGE_FLAGS = flagsOf(AGENT_USAGE);
