import { Registry, collectDefaultMetrics, Counter, Gauge } from 'prom-client';

/** A Prometheus registry per service process (tests run several in one process). */
export function createRegistry(service: string): Registry {
  const registry = new Registry();
  registry.setDefaultLabels({ service });
  // prom-client samples event-loop lag with a 10 ms timer by default: 100 wake-ups a second in
  // every process, most of an idle recorder supervisor's CPU. 50 ms still shows the lag that matters.
  collectDefaultMetrics({ register: registry, eventLoopMonitoringPrecision: 50 });
  return registry;
}

export { Counter, Gauge, Registry };
