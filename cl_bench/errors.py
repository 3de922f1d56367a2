"""User-facing errors: anything the user can fix gets one line on stderr and exit code 2."""


class UserError(Exception):
    """Bad input (unknown name, invalid hyperparameter, missing data, corrupt file).

    The message is one line that says what is wrong and how to fix it.
    """

    exit_code = 2
