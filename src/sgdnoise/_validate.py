"""The former private name of :mod:`sgdnoise.validate`, kept importable for code written
before the checks were made public (import from :mod:`sgdnoise.validate` instead)."""

from sgdnoise.validate import (  # noqa: F401
    check_choice,
    check_matrix,
    check_positive,
    check_positive_int,
    check_vector,
)
