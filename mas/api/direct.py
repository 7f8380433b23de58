"""Routes that read a well-formed request themselves, and leave every other one to FastAPI.

FastAPI's request handling (solving dependencies, validating each parameter, validating the
response again) costs a small route more than the route's own work. On the gateway's hot
routes, a reader takes the request apart with the same pydantic types and the same auth
the signature declares, and calls the endpoint directly. When the reader is unsure (a
value that does not validate, a body that is not JSON) or the app overrides dependencies,
FastAPI handles the request as usual, so every error response is FastAPI's. The OpenAPI
document still comes from the endpoint's signature.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute

__all__ = ["Reader", "direct_route"]

Reader = Callable[[Request], Awaitable[dict[str, Any] | None]]
"""The endpoint's arguments as FastAPI would pass them, or None to let FastAPI handle it.

It may raise what the endpoint's dependencies raise (a 401 `Problem`), as they would.
"""


def direct_route(reader: Reader) -> type[APIRoute]:
    """A route class (for `add_api_route(route_class_override=...)`) reading with `reader`."""

    class DirectRoute(APIRoute):
        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            by_fastapi = super().get_route_handler()
            endpoint = self.endpoint

            async def handler(request: Request) -> Response:
                if not request.app.dependency_overrides:
                    arguments = await reader(request)
                    if arguments is not None:
                        response: Response = await endpoint(**arguments)
                        return response
                return await by_fastapi(request)

            return handler

    return DirectRoute
