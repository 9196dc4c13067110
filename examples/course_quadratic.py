"""The course's worked example, J(w) = w^2 - 10w + 25; see bnfast.examples.course_quadratic."""

import sys

from bnfast.examples.course_quadratic import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
