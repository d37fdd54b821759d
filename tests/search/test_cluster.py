"""A search against a two-node Ray cluster started in the test; one node is removed mid-search."""

from __future__ import annotations

import threading
import time

import pytest
from search_helpers import tiny_config

from prunepilot.search.config import validate_config
from prunepilot.search.runner import run_search
from prunepilot.search.store import RunStore

pytestmark = pytest.mark.slow


def test_two_node_cluster_spreads_trials_and_survives_node_loss(tmp_path) -> None:
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    worker = cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    run = tmp_path / "run"
    removed: dict[str, object] = {}

    def remove_worker_mid_search() -> None:
        path = run / "candidates.jsonl"
        deadline = time.time() + 300
        while time.time() < deadline:
            recs = RunStore(run).ok() if path.is_file() else []
            if len({r.node_id for r in recs}) >= 2 and len(recs) >= 4:
                removed["before"] = recs
                cluster.remove_node(worker)
                removed["at"] = len(recs)
                return
            time.sleep(0.2)

    try:
        cfg = validate_config(
            tiny_config(
                tmp_path,
                **{
                    "strategy.evaluations": 14,
                    "ray.address": cluster.address,
                    "ray.max_failures": 3,
                    "ray.reuse_actors": False,
                },
            )
        )
        watcher = threading.Thread(target=remove_worker_mid_search, daemon=True)
        watcher.start()
        result = run_search(cfg, run, progress=False)
        watcher.join(timeout=5)
    finally:
        cluster.shutdown()
    assert "at" in removed, "the worker node was never used, or the search ended before removal"
    before = removed["before"]
    assert isinstance(before, list)
    assert len({r.node_id for r in before}) == 2  # trials ran on both nodes
    after = RunStore(run).ok()
    assert {r.id for r in before} <= {r.id for r in after}  # nothing lost
    assert len(result.candidates) == 14  # the search completed on the remaining node
