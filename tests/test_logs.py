"""Progress lines: through `logging`, to the current stdout, tagged per worker, silenced by --quiet."""
from nas import logs


def test_lines_carry_the_worker_tag_and_follow_stdout(capsys):
    logs.configure(quiet=False, tag="[w1] ")
    logs.trial_line(7, "1,234 params  val 98.00%")
    logs.line("done")
    assert capsys.readouterr().out == "[w1] trial    7  1,234 params  val 98.00%\n[w1] done\n"


def test_quiet_drops_the_lines(capsys):
    logs.configure(quiet=True)
    logs.line("hidden")
    logs.configure(quiet=False)
    logs.line("shown")
    assert capsys.readouterr().out == "shown\n"
