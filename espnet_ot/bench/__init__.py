"""Benchmarks printed as JSON lines: `python -m espnet_ot.bench {solvers,train_step,inference}`."""
