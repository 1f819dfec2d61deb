"""The Gradio desktop app: renders what app/ services return; no learning logic here."""
