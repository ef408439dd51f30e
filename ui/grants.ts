/** What the caller may do (GET /snapyard/v1/_admin/grants): the page shows only those actions; the API refuses the others anyway. */
export interface Grants {
  user: string | null;
  authEnabled: boolean;
  repository: string | null;
  actions: string[];
  admin: boolean;
}

export const NO_GRANTS: Grants = { user: null, authEnabled: true, repository: null, actions: [], admin: false };

export const canAct = (g: Grants): boolean => g.actions.includes('push') || g.actions.includes('delete');
