"""Chat: the question, the prompt built from what the engines contribute, the streamed, cited answer."""
