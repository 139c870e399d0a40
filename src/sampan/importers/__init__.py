"""Importers: pretrained models from other formats into sampan packages."""
