"""`llmlab serve` is registered with every documented option."""

import llmlab.cli


def test_serve_command_parses_all_options():
    args = llmlab.cli.build_parser().parse_args(
        [
            "serve",
            "--model",
            "m",
            "--port",
            "9001",
            "--host",
            "0.0.0.0",
            "--api-key",
            "k",
            "--max-num-seqs",
            "8",
            "--max-queue",
            "4",
            "--kv-memory",
            "64MiB",
            "--dtype",
            "bfloat16",
            "--quant",
            "int4",
            "--group-size",
            "64",
            "--compile",
        ]
    )
    assert (
        args.port,
        args.api_key,
        args.max_num_seqs,
        args.max_queue,
        args.quant,
        args.group_size,
    ) == (9001, "k", 8, 4, "int4", 64)
    assert args.compile and args.func.__module__ == "llmlab.commands.serve"


def test_kv_memory_sizes_parse():
    import pytest

    from llmlab.engine.model_runner import parse_bytes
    from llmlab.errors import LlmlabError

    assert (
        parse_bytes("512MiB") == 512 * 2**20
        and parse_bytes("1GB") == 10**9
        and parse_bytes(4096) == 4096
    )
    with pytest.raises(LlmlabError):
        parse_bytes("lots")
