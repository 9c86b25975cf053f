import type { AnyRoute, RouteContext } from '../route-table.ts';
import { auditRoutes } from './audit.ts';
import { authRoutes } from './auth.ts';
import { captureRoutes } from './capture.ts';
import { recorderRoutes } from './recorders.ts';
import { consentRoutes } from './consent.ts';
import { erasureRoutes } from './erasure.ts';
import { exportRoutes } from './exports.ts';
import { holdRoutes } from './holds.ts';
import { keyRoutes } from './keys.ts';
import { mediaRoutes } from './media.ts';
import { policyRoutes } from './policies.ts';
import { pseudonymRoutes } from './pseudonyms.ts';
import { redactionRoutes } from './redaction.ts';
import { retentionRoutes } from './retention.ts';
import { reviewRoutes } from './review.ts';
import { searchRoutes } from './search.ts';
import { sessionRoutes } from './sessions.ts';
import { ssoRoutes } from './sso.ts';

/** Every /api/v1 route, one file per domain; this order is the order of the OpenAPI document. */
export function routeTable(ctx: RouteContext): AnyRoute[] {
  return [
    ...exportRoutes(ctx),
    ...authRoutes(ctx),
    ...ssoRoutes(ctx),
    ...keyRoutes(ctx),
    ...mediaRoutes(ctx),
    ...erasureRoutes(ctx),
    ...retentionRoutes(ctx),
    ...holdRoutes(ctx),
    ...searchRoutes(ctx),
    ...sessionRoutes(ctx),
    ...consentRoutes(ctx),
    ...auditRoutes(ctx),
    ...policyRoutes(ctx),
    ...reviewRoutes(ctx),
    ...captureRoutes(ctx),
    ...recorderRoutes(ctx),
    ...redactionRoutes(ctx),
    ...pseudonymRoutes(ctx),
  ];
}
