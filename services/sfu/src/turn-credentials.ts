import { createHmac } from 'node:crypto';
import type { Config } from '../../lib/config.ts';

/** An RTCIceServer as the join answer carries it. */
export interface IceServer {
  urls: string[];
  username: string;
  credential: string;
}

/**
 * Short-lived TURN credentials in coturn's shared-secret REST scheme (`use-auth-secret`):
 * username "<expiry unix seconds>:<identity>", password base64(HMAC-SHA1(secret, username)).
 * coturn recomputes the password from its static-auth-secret and refuses an expired username, so
 * nothing is stored and a leaked credential dies on its own.
 */
export function turnIceServers(config: Pick<Config, 'SFU_TURN_URLS' | 'SFU_TURN_SECRET' | 'SFU_TURN_TTL_S'>, identity: string, nowMs = Date.now()): IceServer[] {
  if (!config.SFU_TURN_URLS || !config.SFU_TURN_SECRET) return [];
  const username = `${Math.floor(nowMs / 1000) + config.SFU_TURN_TTL_S}:${identity}`;
  const credential = createHmac('sha1', config.SFU_TURN_SECRET).update(username).digest('base64');
  return [{ urls: config.SFU_TURN_URLS.split(',').map((u) => u.trim()), username, credential }];
}
