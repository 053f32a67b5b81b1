"""Batched entropic optimal transport in pure PyTorch (no ESPnet imports)."""
