"""What a person sees while a job runs: the live progress panel (or plain
log lines when stdout is not a terminal) and the build ticker."""
