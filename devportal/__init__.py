"""A local, protocol-faithful Bitrix24 portal for development, the demo and tests.

Modules:
- `server`: `DevPortalServer` (start/stop, url, domain, portal; a context manager), the WSGI app and
  `serve_in_child` for a portal in another process.
- `portal`: `DevPortal`, the in-memory portal (state, clock, addresses, directory), composed of mixins:
  `oauth` (tokens, event auth, and the one authorization server of the process), `limits` (rate and
  operating-time limits, injected faults), `delivery` (events to the app's handlers, the offline queue),
  `lifecycle` (install, update, uninstall), `records` (CRM writes, activities, calls and the `act_*`
  actions of a user working in the CRM) and `robots`.
- `rest` (envelope, auth, limits, `batch`) and the `methods` package (`METHODS`, the one registry, built
  from the families `app`, `users`, `messages`, `bizproc`, `crm_records`, `crm_activity`, `crm_items`;
  `common` holds what they share); `phpquery` (PHP `parse_str`); `crm` (schemas, filters, paging); `seed`;
  `ctl` (the `/_dev/...` JSON control API); `pages` (the portal pages and the BX24.js shim at `/bx24.js`);
  `cli` (`nezabyt devportal`).
"""
