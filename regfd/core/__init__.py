"""The pure core: directory classification, policy and verdicts over plain data, with no I/O."""
