"""Processes that share a data_dir build a dataset once (genjax/data/build_lock.py): a
second builder waits for the first one's lock, then reads its copy instead of building;
a data_dir that is a file is one error line."""
import threading

import pytest

from genjax.data import build_lock, text_builders
from genjax.errors import UserError


def test_a_builder_that_waited_reads_the_copy_built_meanwhile(tmp_path, monkeypatch):
    text = "to be or not to be\n" * 60
    path, data_dir = tmp_path / "tiny.txt", str(tmp_path / "tfds")
    path.write_text(text, encoding="utf-8")
    builds, real = [], text_builders.GenjaxTextFile.download_and_prepare

    def counted(self, *args, **kwargs):
        builds.append(threading.current_thread().name)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(text_builders.GenjaxTextFile, "download_and_prepare", counted)
    other = text_builders._builder(str(path), data_dir)  # another process's builder
    got = {}
    waiter = threading.Thread(name="waiter", target=lambda: got.update(
        builder=text_builders.prepare(str(path), data_dir)))
    with build_lock.building(data_dir, other.data_dir):  # ... building the same dataset
        waiter.start()
        waiter.join(0.5)
        assert waiter.is_alive(), "prepare() must wait for the builder that holds the lock"
        other.download_and_prepare(file_format="array_record")
    waiter.join(120)
    assert builds == ["MainThread"]  # the waiter built nothing ...
    builder = got["builder"]  # ... and reads the finished copy
    assert builder.data_dir == other.data_dir
    assert text_builders.read_split(builder, "train") == text[:int(0.9 * len(text))]


def test_a_data_dir_that_is_a_file_is_one_error_line_and_the_file_is_kept(tmp_path):
    """$GENJAX_DATA_DIR naming a file: one UserError line (was FileExistsError)."""
    path, data_dir = tmp_path / "tiny.txt", tmp_path / "a_file"
    path.write_text("to be or not to be\n" * 60, encoding="utf-8")
    data_dir.write_text("keep me")
    with pytest.raises(UserError, match=r"^the data directory .*a_file is a file, not a folder"):
        text_builders.prepare(str(path), str(data_dir))
    assert data_dir.read_text() == "keep me"
