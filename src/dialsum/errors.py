"""The one error type users see: a one-line message that names the file, row or key and the fix.

The CLI turns it into `error: <message>` on stderr and exit code 2, never a traceback.
"""


class DialsumError(Exception):
    """A user-facing error: bad input, bad config, or an environment that cannot run the request."""

    exit_code = 2
