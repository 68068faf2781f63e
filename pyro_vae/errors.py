"""Errors a user can cause and fix; the CLI prints them as one line, never a traceback."""


class UserError(Exception):
    """A mistake in the input (flags, config, data, run folder) with a fix the message names."""


class DataError(UserError):
    """The data is missing or malformed."""


class DivergedError(UserError):
    """Training produced a NaN or infinite loss."""
