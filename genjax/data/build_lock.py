"""One builder of a dataset at a time: processes that share a data_dir (the processes of a
multi-process run on one host, pytest-xdist workers) wait for the first one to finish
building a dataset instead of building it again. An flock: the kernel releases it when its
holder exits, even by SIGKILL. Where flock does not reach (another host on a network file
system), the builders' fallback still holds: the first finished copy is renamed into place
and the others read it.
"""
import contextlib
import fcntl
import os

from genjax.errors import UserError


@contextlib.contextmanager
def building(data_dir: str, dataset_dir: str):
    """Holds `<data_dir>/.build-<dataset_dir relative to data_dir, '/' -> '_'>.lock`
    for the `with` block; `dataset_dir` is the builder's (unprepared) data_dir."""
    if os.path.exists(data_dir) and not os.path.isdir(data_dir):
        raise UserError(f"the data directory {data_dir} is a file, not a folder "
                        f"(config.data.data_dir, else $GENJAX_DATA_DIR)")
    os.makedirs(data_dir, exist_ok=True)
    name = os.path.relpath(dataset_dir, data_dir).replace(os.sep, "_")
    with open(os.path.join(data_dir, f".build-{name}.lock"), "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def prepare_once(data_dir: str, make_builder, prepare):
    """A prepared builder: `make_builder()`; if it is not prepared, under the lock
    make_builder() again (another process may have built it while this one waited) and,
    if still needed, `prepare(builder)`. An OSError from prepare is another process (one
    the lock does not reach: another host) renaming its finished copy into place first:
    that copy is read, or the error raised if there is none."""
    builder = make_builder()
    if builder.is_prepared():
        return builder
    with building(data_dir, builder.data_dir):
        builder = make_builder()
        if builder.is_prepared():
            return builder
        try:
            prepare(builder)
        except OSError:
            builder = make_builder()
            if not builder.is_prepared():
                raise
    return builder
