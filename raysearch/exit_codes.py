"""The exit codes of the `raysearch` command."""

OK = 0
FAILED = 1  # a run that started and failed
USAGE = 2  # bad input, refused with one line
INTERRUPTED = 130  # Ctrl-C, as a shell reports SIGINT
STOPPED = 143  # SIGTERM, as a shell reports it
