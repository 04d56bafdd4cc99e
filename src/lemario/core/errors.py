"""The one exception type that reaches the user as a one-line message (no traceback)."""


class LemarioError(Exception):
    """A problem with the user's input or machine, stated in one line with the fix."""
