"""Pure torch modules and their maths; no I/O, no configuration files."""
