"""`python -m benchmarks --list / --profile`: the entry points the next person starts from."""

from __future__ import annotations

from benchmarks import __main__ as bench_main
from benchmarks.common import Result


def test_list_names_every_benchmark(capsys):
    assert bench_main.main(["--list"]) == 0
    names = capsys.readouterr().out.split()
    assert names == [b.__name__ for b in bench_main.all_benchmarks()]
    assert "bench_rng_requests" in names and len(names) == len(set(names))


def test_profile_needs_exactly_one_match(capsys):
    assert bench_main.main(["--profile", "no-such-benchmark"]) == 1
    assert "matches none" in capsys.readouterr().err
    assert bench_main.main(["--profile", "bench_"]) == 1        # matches them all
    assert "name exactly one" in capsys.readouterr().err


def test_profile_reports_the_result_and_the_hot_functions():
    def bench_fake(reps):
        total = sum(_hot(i) for i in range(20000 * reps))
        return Result("fake", "itself", 1.0, 1.0, 1.0, "-", True, detail=str(total))

    text = bench_main.profile(bench_fake, reps=1, top=5)
    first, rest = text.split("\n", 1)
    assert first.startswith("ok   fake")
    assert "top 5 by tottime" in rest and "top 5 by cumulative" in rest
    assert "(_hot)" in rest                 # the function that did the work is named


def _hot(i: int) -> int:
    return i * i % 7
