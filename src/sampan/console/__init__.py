"""The web console at /console: catalog, try-it, usage and health, key administration.

Server-rendered pages (Jinja2, autoescaped) over the same store, host and platform database
the server uses, plus two small hand-written scripts; no front-end build, nothing fetched from
a CDN. See docs/architecture.md for how its sessions relate to API keys.
"""

from sampan.console.routes import console_router

__all__ = ["console_router"]
