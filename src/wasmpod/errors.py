"""The one kind of error a user can cause, and how it reaches them."""


class UserError(Exception):
    """A mistake or a missing prerequisite the user can fix.

    The message is one line that says what is wrong and what to do; tasks print it on stderr
    and exit non-zero, never with a traceback.
    """
