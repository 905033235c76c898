"""Checkers for the course exercises in the notebooks (issue 5, item 3).

In every lesson notebook 02-10, cells tagged ``exercise`` ask the student to write one piece of a
mechanism (the reference answer sits between ``# BEGIN SOLUTION`` and ``# END SOLUTION`` and is
removed from the student version, see :mod:`vtagml_core.nbtools.student`). The next cell
calls a checker from here, which compares the function with the library on random inputs and
says ``PASS``, or what is wrong and a hint (``UNSOLVED`` while the stub is still there)::

    from vtagml_core.exercises import check_mirror_descent
    check_mirror_descent(my_update)

The exercise function is decorated with ``@exercise("mirror_descent")``: until the student
writes it, calls return the reference answer with a printed note, so the notebook runs on.
"""
from .checkers import (EXERCISES, check_cosine_similarity, check_film_bias, check_mirror_descent,
                       check_tsn, exercise)
from .harness import FALLBACK_NOTE, CheckResult
from .setting_checkers import (check_delta_m, check_discriminator_loss, check_paired_interval,
                               check_parameter_count)
from .transfer_checkers import check_corruption_error, check_fine_tuned_parameters

__all__ = ["EXERCISES", "FALLBACK_NOTE", "CheckResult", "check_corruption_error", "check_cosine_similarity",
           "check_delta_m", "check_fine_tuned_parameters",
           "check_discriminator_loss", "check_film_bias", "check_mirror_descent",
           "check_paired_interval", "check_parameter_count", "check_tsn", "exercise"]
