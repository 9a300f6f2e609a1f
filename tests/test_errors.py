"""nas.errors: the errors the command line prints as one line, their exit codes (2, a failed search 3), and
first_line, which cuts any exception's message to that line."""
import pytest

from nas.errors import CliError, SearchError, SearchFailed, StorageError, UserError, first_line


@pytest.mark.parametrize("error, code", [(UserError, 2), (CliError, 2), (SearchError, 2), (StorageError, 2),
                                         (SearchFailed, 3)])
def test_each_is_a_user_error_exiting_2_but_a_search_that_failed_3(error, code):
    e = error("what and how to fix it")
    assert isinstance(e, UserError) and e.exit_code == code and str(e) == "what and how to fix it"


def test_first_line_is_the_first_line_of_the_message_after_leading_blank_lines():
    assert first_line(ValueError("\n  bad value (42)\nsecond line\nthird")) == "bad value (42)"
    assert first_line(SearchError("one line only")) == "one line only"


@pytest.mark.parametrize("error", [KeyboardInterrupt(), ValueError(""), OSError(" \n \n")])
def test_first_line_of_an_error_without_a_message_is_its_type_name(error):
    assert first_line(error) == type(error).__name__
