"""Luigi tasks that back-fill Snowplow's DynamoDB event manifest: `luigi --module pipeline PopulateManifest`."""
