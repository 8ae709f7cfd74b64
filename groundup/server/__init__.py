"""`groundup serve`: an OpenAI-compatible HTTP server and web chat over the Engine."""
