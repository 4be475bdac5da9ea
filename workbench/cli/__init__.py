"""The ``workbench`` command line: ``main`` builds the parser, one module per group of commands."""
