"""The Gradio app: index pool and request checks (service), result audio (media), and the layout (ui)."""
