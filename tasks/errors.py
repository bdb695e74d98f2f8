"""The error every task module raises on bad input data (its own module so that tasks/base.py and the
helpers it uses, such as tasks/splits.py, import it without importing each other)."""


class DataError(ValueError):
    """Bad input data: the message names the file, line or field and what was expected."""
