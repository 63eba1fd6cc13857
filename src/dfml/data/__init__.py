"""Datasets: archive fetching (mirror or download, checksummed), sources, episodes."""
