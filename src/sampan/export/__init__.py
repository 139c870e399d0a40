"""Exporters: a package's network into a portable format, as a new package version."""

from sampan.export.base import EXPORTERS, export

__all__ = ["EXPORTERS", "export"]
