"""Small shared utilities of espnet_ot (progress reporting, fonts for figures, config files, op counts)."""
