"""Serving: the dynamic batcher, protocol routes and the server application."""
