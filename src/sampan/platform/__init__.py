"""The open API platform: apps, API keys, quotas and rate limits, usage metering, audit log.

It sits above serving: the server knows nothing of keys; the platform hands it middleware.
"""
