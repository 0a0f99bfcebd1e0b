"""The daemon's Prometheus metrics as the tests read them: scraped from a metrics port (or parsed from
the exposition text) into ``Samples``, sample name -> [(labels, value)], and the few things read there.

The leader gauge is read two ways, for two questions: ``leader_gauge`` is what an instance says, or None
when it did not answer (a frozen or dead one says nothing); ``says_active`` is 1 for an instance that
answers it is active and 0 for one that answers otherwise, summed over the instances of a deployment.
"""

from __future__ import annotations

import requests
from prometheus_client.parser import text_string_to_metric_families

Samples = dict[str, list[tuple[dict[str, str], float]]]

LEADER = "rpcdaemon_leader"
LAST_PASS = "rpcdaemon_last_pass_timestamp_seconds"


def parse_samples(text: str) -> Samples:
    """Every sample of a Prometheus text exposition: name -> [(labels, value)]."""
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return samples


def scrape(port: int, *, timeout: float = 5.0) -> Samples:
    """Every sample served on ``http://127.0.0.1:port/metrics`` (a request error propagates)."""
    return parse_samples(requests.get(f"http://127.0.0.1:{port}/metrics", timeout=timeout).text)


def scrape_if_answering(port: int, *, timeout: float = 5.0) -> Samples | None:
    """As ``scrape``, or None when nothing answers in ``timeout`` (a daemon frozen, dead or not up yet)."""
    try:
        return scrape(port, timeout=timeout)
    except requests.RequestException:
        return None


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of ``name`` over the samples whose labels include ``labels``."""
    return sum(value for got, value in samples.get(name, []) if all(got.get(k) == v for k, v in labels.items()))


def pass_stamps(samples: Samples) -> dict[str, float]:
    """Each failover plugin's ``rpcdaemon_last_pass_timestamp_seconds`` (set by every good check pass)."""
    return {labels["plugin"]: value for labels, value in samples.get(LAST_PASS, []) if value > 0}


def leader_gauge(samples: Samples | None) -> float | None:
    """What an instance says of itself in ``rpcdaemon_leader`` (1.0 active, 0.0 not), or None when it did
    not answer (``samples`` is None: see ``scrape_if_answering``) or does not serve the gauge."""
    if samples is None:
        return None
    found = samples.get(LEADER, [])
    return found[0][1] if found else None


def says_active(samples: Samples) -> int:
    """1 if an instance that answered says it is active, else 0: summed over the instances of one
    deployment, exactly one must say so."""
    return 1 if leader_gauge(samples) == 1.0 else 0
