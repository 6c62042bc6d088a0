"""User-facing errors.

Anything a user can cause (a bad model name, a broken file, a prompt that is too long) raises
`LlmlabError` with a one-line message that names the problem. The CLI prints that line and exits
non-zero; tracebacks are shown only with `--debug`.
"""


class LlmlabError(Exception):
    """A problem with the user's input or files, explained in one line."""


class UnknownModelError(LlmlabError):
    pass


class UnsupportedArchitectureError(LlmlabError):
    pass


class CorruptFileError(LlmlabError):
    pass


class ContextLengthError(LlmlabError):
    pass
