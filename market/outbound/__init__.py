"""Outbound webhooks: the endpoints users register (endpoints), where a webhook may go (the
SSRF guard's vetting, destinations), the signed HTTP transport pinned to the vetted address
(transport), and the delivery log with retries and disabling (sending).

Owns `webhook_endpoints`, `webhook_deliveries` and `webhook_delivery_attempts`. Never imports
payments: it is fed user notifications, whatever caused them."""
