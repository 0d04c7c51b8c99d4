"""aligndebug: see why a neural MT model translated a sentence the way it did."""

__version__ = "0.1.0"
