"""The one exception type that users can cause; the CLI prints it as a single line."""


class SertkError(Exception):
    """A problem with the user's input (path, file, option, config), stated in one line.

    The message should name the file (and line, where there is one) and the problem.
    """
