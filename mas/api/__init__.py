"""The HTTP gateway (FastAPI): `create_app(settings, runtime=None)`."""
