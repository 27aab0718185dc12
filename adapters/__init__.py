"""Provider adapters: discovery, fetching, checkpoints and parsers per cloud store."""
