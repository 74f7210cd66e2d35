"""The entry point of each torchrun rank of `dialsum train --nproc N`: it dies with torchrun, then runs the CLI.

    dialsum train CONFIG --nproc 2        # the launcher runs torchrun ... -m dialsum.rank train CONFIG ...
    pytest tests/test_suite.py -k ddp_entry

torchrun starts every rank in a session of its own and gives it no parent-death signal: a rank whose
torchrun was SIGKILLed would train on, holding its GPU's memory. So each rank sets the signal for itself
before anything else (`dialsum.lifeline` states the rule), and ends at once if torchrun is already gone.
"""

if __name__ == "__main__":
    from dialsum import lifeline

    lifeline.die_with_parent("torch.distributed.run")
    from dialsum.cli import main  # imported after: the signal is set before the seconds its imports take

    main()
