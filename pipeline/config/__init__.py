"""Configuration stage: sources.yaml (feeds, newsletter settings) and topics.yaml (rules)."""

from pipeline.config.sources import load_config, resolve_feed_url, slugify

__all__ = ["load_config", "resolve_feed_url", "slugify"]
