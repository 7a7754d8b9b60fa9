"""A local, protocol-faithful Bitrix24 portal for development, the demo and tests.

Modules:
- `server`: `DevPortalServer` (start/stop, url, domain, portal; a context manager), the WSGI app and
  `serve_in_child` for a portal in another process.
- `portal`: `DevPortal`, the in-memory portal: clock, OAuth tokens, limits and faults, CRM data, events,
  robots, install/uninstall and the `act_*` actions of a user working in the CRM.
- `rest` (envelope, auth, limits, `batch`) and `methods` (the REST methods); `phpquery` (PHP `parse_str`);
  `crm` (schemas, filters, paging); `seed`; `ctl` (the `/_dev/...` JSON control API); `pages` (the portal
  pages and the BX24.js shim at `/bx24.js`); `cli` (`nezabyt devportal`).
"""
