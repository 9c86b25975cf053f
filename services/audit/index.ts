/**
 * The compliance service's public surface: the API server, the audit trail writer
 * (other stages get it as an AuditSink), users and keys, the retention sweeper, Object
 * Lock retention for uploads, and the operator CLIs. Everything else under src/ is
 * private to audit.
 */
export { startAuditServer, auditServerOptionsFromConfig, type AuditServer } from './src/http/server.ts';
export { AuditLog, type AuditEntryInput } from './src/audit-log.ts';
export { createUserWithKey } from './src/key-lifecycle.ts';
export { SweeperWorker } from './src/sweeper-worker.ts';
export { objectLockRetention } from './src/object-lock.ts';
export { evaluateRegisteredTranscript } from './src/supervision/evaluate.ts';
export { PolicyDefinitionSchema, SupervisionPolicies } from './src/supervision/policies.ts';
export { searchTranscripts } from './src/transcript-search.ts';
export { exportArchive, verifyArchive } from './src/export.ts';
export { Reconciler } from './src/supervision/reconciliation.ts';
export { runAuditCommand, AUDIT_USAGE } from './src/audit-cli.ts';
export { runComplianceCommand, COMPLIANCE_USAGE } from './src/compliance-cli.ts';
export { runExportCommand } from './src/export-cli.ts';
export { runKeysCommand, KEYS_USAGE } from './src/keys-cli.ts';
