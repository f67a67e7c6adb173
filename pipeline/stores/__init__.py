"""What a backfill keeps and reads outside this process: run markers and the clean and verify records, leases
(S3 conditional writes or a locked local folder), the archive's listings, and the DynamoDB table's shape.

May import: configs, rules.
"""
