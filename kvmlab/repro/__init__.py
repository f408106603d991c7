"""Run reproducers on pools of VMs and return per-run verdicts.

Entry points: :func:`kvmlab.repro.runner.run_repro` (one kernel, one
reproducer, N runs) and the reproducer kinds in :mod:`kvmlab.repro.reproducer`.
"""
