"""ESC-HA: a high-availability pair for a services controller."""

__version__ = "0.1.0"
