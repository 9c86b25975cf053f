import { Counter, Gauge, type Registry } from 'prom-client';

export interface SfuMetrics {
  rooms: Gauge;
  peers: Gauge;
  producers: Gauge<'kind'>;
  consumers: Gauge;
  workers: Gauge;
  workerDeaths: Counter;
  signalingErrors: Counter<'code'>;
  joins: Counter;
  /** Routers rooms span beyond their origin router (a room over several workers). */
  spannedRouters: Gauge;
  /** Host-to-host links: `origin` (other hosts linked to rooms here), `edge` (rooms here linked to their origin). */
  cascadeLinks: Gauge<'side'>;
}

export function createSfuMetrics(registry: Registry): SfuMetrics {
  const registers = [registry];
  return {
    rooms: new Gauge({ name: 'verbatim_sfu_rooms', help: 'Open rooms (routers)', registers }),
    peers: new Gauge({ name: 'verbatim_sfu_peers', help: 'Joined participants', registers }),
    producers: new Gauge({ name: 'verbatim_sfu_producers', help: 'Open producers', labelNames: ['kind'], registers }),
    consumers: new Gauge({ name: 'verbatim_sfu_consumers', help: 'Open consumers', registers }),
    workers: new Gauge({ name: 'verbatim_sfu_workers', help: 'Live mediasoup workers', registers }),
    workerDeaths: new Counter({ name: 'verbatim_sfu_worker_deaths_total', help: 'mediasoup workers that died and were replaced', registers }),
    signalingErrors: new Counter({ name: 'verbatim_sfu_signaling_errors_total', help: 'Signaling requests answered with an error', labelNames: ['code'], registers }),
    joins: new Counter({ name: 'verbatim_sfu_joins_total', help: 'Successful joins', registers }),
    spannedRouters: new Gauge({ name: 'verbatim_sfu_spanned_routers', help: 'Routers rooms span on other workers than their origin router', registers }),
    cascadeLinks: new Gauge({ name: 'verbatim_sfu_cascade_links', help: 'Host-to-host links of cascaded rooms, by side (origin, edge)', labelNames: ['side'], registers }),
  };
}
