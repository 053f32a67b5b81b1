"""Command-line tools of espnet-ot (`python -m espnet_ot.bin.<tool>`)."""
