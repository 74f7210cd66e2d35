"""Where the suite's experiments run: this machine's slots (`local`), or a Ray cluster (`ray`)."""
