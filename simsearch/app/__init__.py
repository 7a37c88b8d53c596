"""The Gradio app: indexes (pool), requests (service), result audio (media, clips), index text (views), API (api), layout (ui)."""
