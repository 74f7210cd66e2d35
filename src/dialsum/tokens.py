"""The names every layer agrees on: the competition's mask tokens, their pattern, and the label id no loss counts.

    pytest tests/test_metrics.py -k mask
    pytest tests/test_data.py

Speakers and personal data are masked in the data as `#Person1#` ... `#Person7#`, `#PhoneNumber#`, ...: the
tokenizers keep them whole, the scorer reads each as one morpheme, and the decoder-token clean-up leaves them
in the summaries. `IGNORE_INDEX` is the label of a position the loss skips (padding, a causal LM's prompt):
PyTorch's cross-entropy default, and what transformers' models expect.
"""

MASK_TOKENS = [f"#Person{i}#" for i in range(1, 8)] + [
    "#PhoneNumber#",
    "#Address#",
    "#PassportNumber#",
    "#DateOfBirth#",
    "#SSN#",
    "#CardNumber#",
    "#CarNumber#",
    "#Email#",
]
MASK_TOKEN_PATTERN = r"#[A-Za-z]+\d*#"  # any of them, and any other token written the same way
IGNORE_INDEX = -100
