"""The metering sidecar: the only way into a pool.

It proxies Triton's KServe v2 protocol (HTTP and gRPC), authenticates each call to a payment
channel, reserves credit before forwarding, journals every charge durably before the response
completes, and reports signed cumulative usage per channel. Entry points for other areas:
`pricing.Price`, `credits.FileCreditSource`, `usage_report.verify`, `sidecar.sidecar_spec`.
"""
