"""NetFlow v9 / IPFIX / v5 exporter sink: `encode` builds the packets (pure), `sink` sends them, `config` declares
`type: netflow`. `collector.sinks.create_sink` imports `sink`, which registers the type."""
