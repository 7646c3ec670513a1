"""User-facing errors.

Every problem the user can fix (a bad ``params.yaml``, a dataset that cannot be
used, weights that cannot be fetched) is raised as a :class:`TransferpilotError`
subclass. The CLI prints its message, without a traceback, and exits with its
``exit_code``:

===========  ===================================================
exit code    meaning
===========  ===================================================
1            an unexpected failure (a bug: please report it)
2            bad configuration or usage (``params.yaml``, flags)
3            bad input data (no usable images, a single class...)
4            model or weights unavailable or inconsistent
5            a file could not be read or written (disk full,
             permissions): outputs are left as they were
===========  ===================================================
"""

from __future__ import annotations

#: Exit code for an operating-system I/O error (``OSError``) outside the input data.
IO_EXIT_CODE = 5


class TransferpilotError(Exception):
    """Base class of the errors a user can act on."""

    exit_code: int = 1


class ConfigError(TransferpilotError):
    """``params.yaml`` or a command-line option is invalid."""

    exit_code = 2


class DataError(TransferpilotError):
    """The input data cannot be used as given."""

    exit_code = 3


class ModelError(TransferpilotError):
    """A model name is unknown, or its weights are missing or do not fit."""

    exit_code = 4
