"""The supply chain: images, git, builds and their records, keys, signatures, signing,
verification (key and keyless), and the registry client."""
