"""Errors that end a command with one clear message and a non-zero exit."""


class UserError(Exception):
    """Bad input from the user: an unknown name, a wrong value, a missing or broken file.

    The command line prints the message alone (no traceback) and exits with status 2.
    """


class TrainingDiverged(RuntimeError):
    """A loss became NaN or Inf. The message names the loss and the step."""
