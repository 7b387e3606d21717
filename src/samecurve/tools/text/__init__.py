"""Text-track tools (token-id inputs): token attribution, trigger search and the
black-box example-search baseline; importing this package registers them."""

from samecurve.tools.text import attribution, example_search, trigger_search

__all__ = ["attribution", "example_search", "trigger_search"]
