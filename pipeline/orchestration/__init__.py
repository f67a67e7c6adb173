"""One backfill (or clean, or verify) as this process runs it, free of Luigi: its context (checked parameters,
validated configs, the marker store), its plan and batches, the one batch lifecycle every mode shares, the
import's state machine, and the launcher that hands a batch to a runner.

May import: runners, stores, configs, rules.
"""
