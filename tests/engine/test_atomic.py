import pytest

from engine import atomic


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "data.bin"
    atomic.write_bytes(target, b"good")

    def broken_writer(tmp):
        tmp.write_bytes(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic.write_with(target, broken_writer)
    assert target.read_bytes() == b"good"
    assert [p.name for p in tmp_path.iterdir()] == ["data.bin"]
