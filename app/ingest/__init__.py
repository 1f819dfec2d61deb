"""From a file in a watched folder to searchable chunks: rules, parsing, chunking, embedding, the pipeline and the watcher."""
