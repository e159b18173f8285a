"""Training: config -> data -> engine -> run folder -> export. See `python -m training.train --help`."""
