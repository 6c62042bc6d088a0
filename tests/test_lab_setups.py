"""The experiment setups behind the lab's verdicts: the bundled BERT corpus is what its generator
writes, the downstream task's test words are disjoint from its labelled words, the word tokenizer
fits the training core's PairEncoder, and the chrono gate initialisation opens the gates it should."""

import math

import torch

from llmlab.exp import bert_corpus
from llmlab.exp.long_range_memory import Recaller


def test_bundled_bert_corpus_is_what_write_corpus_writes(tmp_path):
    fresh = tmp_path / "corpus.txt"
    bert_corpus.write_corpus(fresh)
    assert fresh.read_bytes() == bert_corpus.CORPUS.read_bytes()
    documents = fresh.read_text(encoding="utf-8").split("\n\n")
    assert len(documents) == 1600 and all(d.count(". ") >= 3 for d in documents)


def test_topic_task_tests_words_absent_from_the_labelled_rows():
    rows = bert_corpus.topic_task()
    vocabulary = {w for words, _ in bert_corpus.TOPICS.values() for w in words}

    def words(split):
        return {w for text, _ in rows[split] for w in text.split() if w in vocabulary}

    assert not words("train") & words("test_unseen")
    assert words("test_seen") <= words("train")
    for split in rows:  # every topic equally often
        counts = torch.bincount(torch.tensor([label for _, label in rows[split]]))
        assert len(counts) == len(bert_corpus.TOPICS) and counts.min() == counts.max()


def test_word_tokenizer_fits_the_bert_pair_encoder():
    from llmlab.train.bert import PairEncoder

    text = bert_corpus.CORPUS.read_text(encoding="utf-8")
    tokenizer = bert_corpus.word_tokenizer(text)
    encoder = PairEncoder(tokenizer, 16)
    ids, segments = encoder.pack(
        *encoder.encode_texts(["the goat eats grass.", "i saw the plum yesterday."])
    )
    unk = tokenizer.token_to_id("[UNK]")
    assert unk not in ids and ids[0] == encoder.cls and ids.count(encoder.sep) == 2
    assert segments == [0] * 7 + [1] * 7
    assert tokenizer.decode(ids[1:6]) == "the goat eats grass ."


def test_chrono_init_opens_the_memory_gates():
    torch.manual_seed(0)
    for kind in ("LSTM", "GRU"):
        model = Recaller(kind)
        model.chrono_init(t_max=40)
        cell = model.rnn.cells[0]
        h = cell.hidden_size
        keep = cell.bias_ih[h : 2 * h] + cell.bias_hh[h : 2 * h]
        assert keep.min() >= 0 and keep.max() <= math.log(39)
        assert torch.sigmoid(keep).mean() > 0.8  # forget / update gate mostly open at the start
        if kind == "LSTM":
            torch.testing.assert_close(cell.bias_ih[:h] + cell.bias_hh[:h], -keep)
