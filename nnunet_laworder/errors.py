class InputError(Exception):
    """Bad user input (a file, a folder, an option): the CLI prints the message and exits with status 2."""
