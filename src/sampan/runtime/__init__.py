"""Engines: a package loaded on one backend and device, predict(batch) -> batch on numpy."""
