"""The demo region: a seeded synthetic quarter near Beihai that a naive detector fails on.

``make_demo`` (in :mod:`pipeline.demo.generate`) writes imagery, reference layers, the truth and
``demo.toml``; the other modules are its parts: scene (grid, dates), shapes, landscape (vectors),
changes (truth), spectra (reflectance), clouds, render (DN) and layers (writing layers and truth).
"""
from pipeline.demo.generate import demo_config, demo_toml, make_demo

__all__ = ["make_demo", "demo_config", "demo_toml"]
