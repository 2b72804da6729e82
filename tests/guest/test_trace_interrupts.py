"""Regression: tracing a guest that takes an interrupt.  Machine._deliver emits an
``interrupt`` trace event that trace.EVENTS did not declare, so any traced run with an
interrupt (the pytest plugin traces every run) stopped with a KeyError."""

from uvirt.testing.guest_tests import run_guest


def test_traced_run_with_interrupts(firmware):
    run = run_guest(firmware("irq_msi"), trace_tail=400)
    assert run.exit_code == 1, run.stop.report()
    assert any(line.startswith("interrupt vector=0x") for line in run.trace_tail)
