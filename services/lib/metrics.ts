import { Registry, collectDefaultMetrics, Counter, Gauge } from 'prom-client';

/** A Prometheus registry per service process (tests run several in one process). */
export function createRegistry(service: string): Registry {
  const registry = new Registry();
  registry.setDefaultLabels({ service });
  collectDefaultMetrics({ register: registry });
  return registry;
}

export { Counter, Gauge, Registry };
