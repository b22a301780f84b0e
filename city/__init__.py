"""The core: events, city config, geography, policy, privacy. Pure Python, no servers."""
