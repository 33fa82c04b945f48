"""The ingress deployment: a FastAPI app (built inside the replica) composing the model deployments."""

from __future__ import annotations

import asyncio
import logging

from fastapi import FastAPI
from ray import serve
from ray.serve.handle import DeploymentHandle

from serve_app.api import create_api
from serve_app.proxy_error_page import install_error_page_on_every_node
from serve_app.settings import Settings


def _in_this_replica(handle: DeploymentHandle) -> DeploymentHandle:
    """The same deployment's handle made here: a handle carries the transport default of the process that built
    the app (a driver's `serve.run`, or the cluster's build task under `serve deploy`), while one made in the
    replica follows this replica's Serve settings (serve_app/serve_env.py), however the app was built."""
    return serve.get_deployment_handle(handle.deployment_name, handle.app_name)


@serve.deployment
@serve.ingress()
class Ingress:
    def __init__(self, settings: Settings, handles: dict[str, dict[str, DeploymentHandle]]):
        logging.getLogger("ray.serve.eduserve").setLevel(settings.log_level)
        self.settings = settings
        self.handles = {role: {slot: _in_this_replica(handle) for slot, handle in slots.items()}
                        for role, slots in handles.items()}
        self.paged_nodes = install_error_page_on_every_node(wait_s=10.0)
        self._paging: asyncio.Future | None = None

    async def check_health(self) -> None:
        # This node's page back over Ray's, should HAProxy's manager have restarted and rewritten it; and the page on
        # nodes that joined since. On a worker thread, never awaited: a slow GCS must hold neither the loop nor this
        # check.
        if self._paging is None or self._paging.done():
            self._paging = asyncio.get_running_loop().run_in_executor(None, self._refresh_error_pages)

    def _refresh_error_pages(self) -> None:
        self.paged_nodes = install_error_page_on_every_node(self.paged_nodes)

    def __serve_build_asgi_app__(self) -> FastAPI:
        # Serve calls this after __init__, in the replica: the app and its state never cross a process boundary;
        # the state is built when the app starts (its lifespan), once storage is open.
        return create_api(self.settings, self.handles)
