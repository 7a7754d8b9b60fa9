"""The headers every answer of ours carries, the event receivers' fast path and the admin's pages alike."""

# No content sniffing (a JSON or CSV answer is never run as HTML or script), and no page address
# (it carries the page token) sent onwards.
SECURITY_HEADERS = (("X-Content-Type-Options", "nosniff"), ("Referrer-Policy", "no-referrer"))
