"""Run reproducers on pools of VMs and return per-run verdicts."""
