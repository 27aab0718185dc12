"""Provider adapters: discovery, fetching, checkpoints and parsers per cloud store.

Each registers its types in `collector.registry` (by `type:` name for sources, by provider for formats); the core
reaches this package only through that registry.
"""
