"""JSON Lines reading shared by the preference data and `genjax.evaluate --samples`."""
import pytest

from genjax import jsonl
from genjax.data import preferences
from genjax.errors import UserError


def test_blank_lines_are_skipped_and_line_numbers_count_them():
    lines = ['{"a": 1}', "", "   ", '[2, 3]', '"four"']
    assert list(jsonl.records("f.jsonl", lines)) == [(1, {"a": 1}), (4, [2, 3]), (5, "four")]


def test_the_first_bad_line_is_one_error_naming_file_and_line():
    with pytest.raises(UserError, match=r"^f.jsonl: line 3 is not valid JSON \(Expecting"):
        list(jsonl.records("f.jsonl", ['{"a": 1}', "", "{oops}", "{also bad}"]))


def test_preference_files_name_the_bad_line(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text('{"prompt": "p", "chosen": "a", "rejected": "b"}\n[1]\n')
    with pytest.raises(UserError, match=r"train.jsonl:2: needs string fields"):
        preferences.read_jsonl(str(path))
    path.write_text('{"prompt": "p", "chosen": "a", "rejected": "b"}\nnot json\n')
    with pytest.raises(UserError, match=r"train.jsonl: line 2 is not valid JSON"):
        preferences.read_jsonl(str(path))
