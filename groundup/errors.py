"""GroundupError: the one exception type whose message the CLI prints as a single line.

Raise it for bad input (unknown model, corrupted file, prompt too long) with a
message that names what was wrong and what to do; the CLI prints
`error: <message>` and exits with status 1, without a traceback.
"""


class GroundupError(Exception):
    """A user-facing error: the message is the whole story."""
