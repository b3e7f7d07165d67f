"""The one exception type the library raises for bad input.

Every message names the problem (the file, the config key, the value) and the fix.
The CLI prints it without a traceback and exits with status 2.
"""


class LMError(Exception):
    """Bad input or configuration, with a message that says what to do about it."""
