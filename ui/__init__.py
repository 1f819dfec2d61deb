"""The Gradio desktop app: renders what app/ services return; no learning logic here."""

import os

# Engram never phones home: gradio's telemetry is off before gradio is first imported.
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
