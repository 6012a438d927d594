"""``python -m streamrank.streams.cli ...``: the ``streamrank`` command without its script."""

from streamrank.streams.cli import main

if __name__ == "__main__":  # importing this module (a package walk) runs nothing
    main()
