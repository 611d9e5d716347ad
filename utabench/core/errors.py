"""The one exception type for bad user input: the CLI prints its message as a single line and exits non-zero."""


class UtabenchError(Exception):
    """Input the user can fix: the message names what was expected and how to fix it."""


class NotApplicable(Exception):
    """A task cannot run on a backbone (e.g. zero-shot on an image-only encoder); recorded, not an error."""
