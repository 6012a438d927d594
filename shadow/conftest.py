"""pytest's view of this package: which modules its doctest collection must not import.

``mirror.py`` declares a shadow worker's agents and needs ``STREAMRANK_SHADOW_VERSION``, which
``streamrank shadow worker`` sets; ``tests/test_shadow_live.py`` runs it as a real process.
"""

collect_ignore = ["mirror.py"]
