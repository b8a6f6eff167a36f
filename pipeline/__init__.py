"""Tech Matin regulatory newsletter pipeline."""

__version__ = "0.1.0"
