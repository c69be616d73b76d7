"""What both SDK suites share: the mock's canonical answer, and running the tests."""

import sys
import traceback


def canonical(text):
    """The mock's canonical answer: 60 words, `Alfa-1` to `Hotel-60`, in order."""
    words = text.split(" ")
    assert len(words) == 60, f"{len(words)} words: {text!r}"
    for i, word in enumerate(words, start=1):
        assert word.endswith(f"-{i}"), f"word {i} is {word!r} in {text!r}"


def run(namespace):
    """Runs every `test_*` function of `namespace` in order, prints `N passed, N failed`
    and exits non-zero on a failure."""
    tests = [(name, fn) for name, fn in namespace.items() if name.startswith("test_")]
    failed = 0
    for name, test in tests:
        try:
            test()
            print(f"ok   {name}")
        except Exception:  # noqa: BLE001 - every failure is reported, then counted
            failed += 1
            print(f"FAIL {name}")
            traceback.print_exc()
    print(f"{len(tests) - failed} passed, {failed} failed")
    sys.exit(1 if failed else 0)
