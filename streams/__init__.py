"""streamrank's streaming side: the Faust app, its topics and agents, and the CLI."""
