"""actors.openvino_ir.cache_lock: compiles into one OpenVINO cache directory are serialised (two scorers
compiling the same IR at once race on the blob's permissions otherwise)."""

from __future__ import annotations

import threading

from actors.openvino_ir import cache_lock


def test_a_second_holder_waits_until_the_first_releases(tmp_path) -> None:
    held, release, entered = threading.Event(), threading.Event(), threading.Event()

    def first() -> None:
        with cache_lock(str(tmp_path)):
            held.set()
            release.wait(10)

    def second() -> None:
        with cache_lock(str(tmp_path)):
            entered.set()

    a = threading.Thread(target=first)
    a.start()
    assert held.wait(10)
    b = threading.Thread(target=second)
    b.start()
    assert not entered.wait(0.5)  # blocked while the first holds the lock
    release.set()
    a.join(10)
    b.join(10)
    assert entered.is_set()


def test_other_directories_do_not_wait(tmp_path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with cache_lock(str(tmp_path / "a")), cache_lock(str(tmp_path / "b")):
        pass
    assert (tmp_path / "a" / ".compile.lock").exists()
