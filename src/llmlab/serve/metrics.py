"""Prometheus text exposition for `/metrics`: engine gauges, counters and latency histograms.

metrics = ServerMetrics()
engine.on_token = metrics.observe_token        # TTFT and inter-token latency
text = metrics.render(engine.stats())         # text/plain; version=0.0.4
"""

from __future__ import annotations

import threading

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 30.0)


class Histogram:
    def __init__(self, name: str, help_text: str, buckets=LATENCY_BUCKETS):
        self.name, self.help, self.buckets = name, help_text, tuple(buckets)
        self.counts = [0] * len(self.buckets)
        self.count, self.sum = 0, 0.0
        self._lock = threading.Lock()

    def observe(self, value: float):
        with self._lock:
            self.count += 1
            self.sum += value
            for i, upper in enumerate(self.buckets):
                if value <= upper:
                    self.counts[i] += 1

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        with self._lock:
            for upper, n in zip(self.buckets, self.counts):
                lines.append(f'{self.name}_bucket{{le="{upper}"}} {n}')
            lines += [
                f'{self.name}_bucket{{le="+Inf"}} {self.count}',
                f"{self.name}_sum {self.sum:.6f}",
                f"{self.name}_count {self.count}",
            ]
        return lines


# (stat key, metric name, type, help)
_ENGINE_SERIES = [
    ("running", "llmlab_requests_running", "gauge", "Sequences in the running batch"),
    ("waiting", "llmlab_requests_waiting", "gauge", "Sequences waiting to be scheduled"),
    ("kv_blocks_used", "llmlab_kv_blocks_used", "gauge", "KV cache blocks referenced by sequences"),
    (
        "kv_blocks_free",
        "llmlab_kv_blocks_free",
        "gauge",
        "KV cache blocks free (incl. evictable cached ones)",
    ),
    (
        "prefix_cache_hit_rate",
        "llmlab_prefix_cache_hit_rate",
        "gauge",
        "Prompt tokens served from the prefix cache / prompt tokens",
    ),
    (
        "prefix_cache_hit_tokens",
        "llmlab_prefix_cache_hit_tokens_total",
        "counter",
        "Prompt tokens served from the prefix cache",
    ),
    ("generated_tokens", "llmlab_generated_tokens_total", "counter", "Tokens generated"),
    (
        "preemptions",
        "llmlab_preemptions_total",
        "counter",
        "Sequences preempted for lack of KV blocks",
    ),
    (
        "guided_masks",
        "llmlab_guided_masks_total",
        "counter",
        "Token masks computed for constrained (structured-output) requests",
    ),
    (
        "guided_mask_seconds",
        "llmlab_guided_mask_seconds_total",
        "counter",
        "CPU seconds spent computing those masks (overlapped with the forward pass)",
    ),
]


class ServerMetrics:
    def __init__(self):
        self.ttft = Histogram(
            "llmlab_time_to_first_token_seconds", "Time from request arrival to its first token"
        )
        self.itl = Histogram(
            "llmlab_inter_token_latency_seconds", "Time between consecutive tokens of a sequence"
        )
        self.requests_total = 0
        self.request_errors_total = 0

    def observe_token(self, seq, first: bool, seconds: float):
        (self.ttft if first else self.itl).observe(seconds)

    def render(self, stats: dict) -> str:
        lines = []
        for key, name, kind, help_text in _ENGINE_SERIES:
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", f"{name} {stats[key]}"]
        for name, value, help_text in [
            ("llmlab_http_requests_total", self.requests_total, "API requests (/v1/*) received"),
            (
                "llmlab_http_request_errors_total",
                self.request_errors_total,
                "API requests answered with an error (status >= 400, or a stream ended by an error)",
            ),
        ]:
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} counter", f"{name} {value}"]
        lines += self.ttft.render() + self.itl.render()
        return "\n".join(lines) + "\n"
