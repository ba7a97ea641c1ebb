"""Command-line interface: ``fiberflow <command>``; one module and one ``main(argv)`` per command."""
