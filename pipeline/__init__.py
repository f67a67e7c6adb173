"""Back-fill Snowplow's DynamoDB event manifest: `luigi --module pipeline PopulateManifest ...`.

Importing the package sets up the command's console (one-line errors, exit codes) and registers its Luigi tasks.
Its subpackages are floors, each importing only those below it (tests/test_layout.py holds to it):

    tasks          the Luigi face: the commands and the tasks of their graphs, targets, the scheduler check
    reports        what an operator reads: the dry run, the summary, clean and verify reports
    orchestration  one backfill, Luigi-free: its context, plan, batch lifecycle, import, launcher
    runners        the Spark job on this machine or as EMR steps: job code, EMR requests, outcomes
    stores         what lives in S3 or on disk and in DynamoDB: markers, records, leases, listings, the table
    configs        the user's files and settings: storage and resolver configs, Iglu, config.yml, [emr], params
    rules          pure rules at the bottom: errors, run ids, batches, estimates, text
"""
from pipeline.tasks import console  # noqa: F401 - sets up the command's console
from pipeline.tasks.maintenance import CleanBatch, CleanManifest, VerifyBatch, VerifyManifest
from pipeline.tasks.populate import EnumerateRuns, ImportBatch, PopulateManifest, RunBatch, ValidateConfigs

__all__ = ["CleanBatch", "CleanManifest", "EnumerateRuns", "ImportBatch", "PopulateManifest", "RunBatch",
           "ValidateConfigs", "VerifyBatch", "VerifyManifest"]
