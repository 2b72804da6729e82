"""Service threads leave Ctrl-C to the main thread (uvirt/service_thread.py)."""
import signal
import threading

from uvirt.service_thread import MAIN_THREAD_SIGNALS, start_service_thread


def test_a_service_thread_blocks_the_signals_the_main_thread_handles():
    seen: list[set[int]] = []
    done = threading.Event()

    def body() -> None:
        seen.append(set(signal.pthread_sigmask(signal.SIG_BLOCK, [])))
        done.set()

    t = start_service_thread(body, "probe")
    assert done.wait(5) and t.daemon and t.name == "probe"
    assert MAIN_THREAD_SIGNALS <= seen[0]
    assert signal.SIGINT not in signal.pthread_sigmask(signal.SIG_BLOCK, [])   # main thread untouched
