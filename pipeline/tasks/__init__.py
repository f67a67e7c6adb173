"""The Luigi face: the commands (PopulateManifest, CleanManifest, VerifyManifest), the tasks of their graphs,
the targets that show where each run's proof lives, the unreachable-scheduler check and the console (one-line
errors, exit codes). Thin: every task hands its work to orchestration/ and its text to reports/.

May import: reports, orchestration, runners, stores, configs, rules.
"""
