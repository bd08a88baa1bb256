"""``python -m edge_node`` is the ``edgecare`` command."""

from edge_node.cli import main

main()
