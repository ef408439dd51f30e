import type { RequestContext } from '../context.js';
import type { DeltaService } from '../delta-service.js';

/**
 * An admin endpoint (snapshot lifecycle, issue 4): everything under
 * /snapyard/v1/ whose path the OCI and delta routes do not take. `pattern`
 * is matched against the URL path; its groups are handed to `handle`. Names
 * captured from paths must be checked with server/names.ts checkName.
 */
export interface AdminRoute {
  method: 'GET' | 'POST' | 'PUT' | 'DELETE';
  pattern: RegExp;
  handle(ctx: RequestContext, m: RegExpExecArray, svc: AdminServices): Response | Promise<Response>;
}

/** What admin handlers may use besides the request context's store. */
export interface AdminServices {
  delta: DeltaService;
}
