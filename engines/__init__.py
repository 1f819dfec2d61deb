"""Knowledge writers (rag, ace, ttt, ...), one subpackage each, sharing one protocol."""
