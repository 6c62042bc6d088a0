"""Building blocks only the foundations lab uses, kept next to it (not in nn/ or models/, which
hold what the serving and training stack runs): classic activations, BatchNorm/LayerNorm/RMSNorm,
inverted and notes-style dropout, Xavier/He init, RNN/LSTM/GRU cells, a small CNN and the original
encoder-decoder Transformer. Each is checked against its torch counterpart in tests/test_lab_*.py.

    from llmlab.exp.blocks.recurrent import LSTM
    from llmlab.exp.blocks.seq2seq import Seq2SeqTransformer
"""
