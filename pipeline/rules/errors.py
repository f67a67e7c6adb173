"""The one exception type whose message is shown to the user as-is, on one line."""


class PipelineError(Exception):
    """A problem the user can fix (bad config, bad parameter, missing table); str() is the whole message."""
