"""Checkers for the course exercises in the notebooks (issue 5, item 3).

In notebooks 02-04, cells tagged ``exercise`` ask the student to write one piece of a
mechanism (the reference answer sits between ``# BEGIN SOLUTION`` and ``# END SOLUTION`` and is
removed from the student version, see :mod:`vtagml_core.nbtools.student`). The next cell
calls a checker from here, which compares the function with the library on random inputs and
says ``PASS``, or what is wrong and a hint::

    from vtagml_core.exercises import check_mirror_descent
    check_mirror_descent(my_update)
"""
from .checkers import check_cosine_similarity, check_film_bias, check_mirror_descent, check_tsn
from .harness import CheckResult

__all__ = ["CheckResult", "check_cosine_similarity", "check_film_bias", "check_mirror_descent",
           "check_tsn"]
