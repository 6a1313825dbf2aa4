"""Helpers the tests share: plain functions that make data and stand-ins. Built, cached objects (the tiny
detector, its checkpoint, the BCCD root) are fixtures in tests/conftest.py; import helpers as
``from tests.support.<module> import name``."""
