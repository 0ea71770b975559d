"""What the user reads on stderr around a progress bar."""

import re

from pipeline import console


def segments(err: str) -> list[str]:
    """What a terminal or a log shows as lines: stderr cut at every \\r and \\n, blanks dropped."""
    return [s for s in re.split(r"[\r\n]", err) if s.strip()]


def test_a_note_printed_under_a_bar_starts_its_own_line_and_a_closed_bar_is_drawn_once(capsys):
    with console.progress(3, "video", "stage one") as bar:
        bar.update(1)
        bar.refresh()
        console.say("failed: a.avi: not a readable video")
        bar.update(2)
        bar.refresh()  # drawn at 3/3, as a bar's last update is
    err = capsys.readouterr().err
    assert "failed: a.avi: not a readable video" in segments(err), repr(err)
    assert sum("3/3" in s for s in segments(err)) <= 1, repr(err)  # close does not draw the final line again


def test_plural():
    assert [console.plural(n, "shard") for n in (0, 1, 2)] == ["0 shards", "1 shard", "2 shards"]


def test_a_finished_bar_stays_on_a_terminal_and_is_cleared_in_a_log(monkeypatch, capsys):
    for tty in (True, False):
        monkeypatch.setattr("sys.stderr.isatty", lambda tty=tty: tty)
        with console.progress(2, "video", "stage one") as bar:
            bar.update(2)
        assert bar.leave is tty
