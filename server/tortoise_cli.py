"""TORTOISE_ORM for the `tortoise` CLI (makemigrations): built from the same settings as the server."""

from server.config import load_settings
from server.db import tortoise_config

TORTOISE_ORM = tortoise_config(load_settings())
