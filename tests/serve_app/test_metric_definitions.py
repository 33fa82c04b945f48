"""Every metric the ingress and the model replicas define can be created inside a Serve replica: Serve reserves the
`deployment`, `replica` and `application` tags, and a metric using one fails to register (which once silenced every
ingress metric). Pure logic: a stand-in replica context, the real ray.serve.metrics classes."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from ray.serve import context

from deployments import metrics as replica_metrics
from serve_app import metrics as ingress_metrics


@pytest.mark.parametrize("define", [ingress_metrics._counters, replica_metrics._metrics], ids=["ingress", "replica"])
def test_metrics_register_inside_a_replica(monkeypatch, define):
    replica = SimpleNamespace(app_name="eduserve", deployment="Probe", replica_tag="probe-1")
    monkeypatch.setattr(context, "_get_internal_replica_context", lambda: replica)
    created = define.__wrapped__()  # not the cached set: built here, under the replica context
    assert created and all(hasattr(metric, "_tag_keys") for metric in created.values())
