"""The Trainer as dialsum runs it: length-bucketed batches, summaries sorted too only on request.

    pytest tests/test_hf_trainer.py
"""

from __future__ import annotations

import random

import pytest

from dialsum import archs, modeling
from dialsum.data import LengthBucketSampler, Seq2SeqCollator, padding_efficiency


@pytest.fixture(scope="module")
def make(tmp_path_factory):
    from transformers import Seq2SeqTrainingArguments

    from dialsum.hf_trainer import Seq2SeqDialsumTrainer

    spec = archs.tiny_spec(archs.KNOWN_ARCHS["digit82/kobart-summarization"], 32, 1, 60)
    model = modeling.build_fresh_model(archs.config_from_spec(spec), seed=0)
    rng = random.Random(0)
    rows = [{"input_ids": [rng.randrange(5, 60) for _ in range(rng.randrange(4, 60))],
             "labels": [rng.randrange(5, 60) for _ in range(rng.randrange(2, 30))]} for _ in range(256)]
    args = Seq2SeqTrainingArguments(output_dir=str(tmp_path_factory.mktemp("t")), per_device_train_batch_size=8,
                                    use_cpu=True, report_to="none", disable_tqdm=True)

    def trainer(**kw):
        return Seq2SeqDialsumTrainer(model=model, args=args, train_dataset=rows, data_collator=Seq2SeqCollator(1),
                                     chunk_tokens=None, **kw)

    return trainer, rows


def test_batches_sort_by_input_length_and_by_summary_length_only_on_request(make):
    trainer, rows = make
    plain = trainer(length_buckets=True)._get_train_sampler()
    both = trainer(length_buckets=True, bucket_summaries=True)._get_train_sampler()
    assert isinstance(plain, LengthBucketSampler) and plain.label_lengths is None
    assert both.label_lengths == [len(r["labels"]) for r in rows]

    def label_efficiency(sampler):
        return padding_efficiency([[len(rows[i]["labels"]) for i in b] for b in sampler.batches()])

    assert label_efficiency(both) > label_efficiency(plain) + 0.1
    assert not isinstance(trainer(length_buckets=False)._get_train_sampler(), LengthBucketSampler)


def test_dev_is_generated_during_training_with_the_penalties_on_generated_tokens(make, monkeypatch):
    """The Trainer's generation takes the penalties that skip the decoder start, over what evaluate() was
    given, as generation after training does (generation.penalties_on_generated)."""
    from transformers import Seq2SeqTrainer

    from dialsum import generation
    from dialsum.sections import GenerationSection

    trainer, _ = make
    seen: dict = {}
    monkeypatch.setattr(Seq2SeqTrainer, "prediction_step",
                        lambda self, model, inputs, loss_only, ignore_keys=None, **kw: seen.update(kw))
    penalties = generation.penalties_on_generated(GenerationSection(repetition_penalty=1.5), 1)
    t = trainer(length_buckets=False, penalties=penalties)
    t._gen_kwargs = {"num_beams": 4, "repetition_penalty": 1.5}  # as evaluate() sets them
    t.prediction_step(t.model, {}, False)
    assert seen["num_beams"] == 4 and seen["repetition_penalty"] == 1.0
    assert seen["logits_processor"] is penalties["logits_processor"]
