"""dialsum: fine-tune, evaluate and compare seq2seq models for Korean dialogue summarization."""

__version__ = "0.1.0"
