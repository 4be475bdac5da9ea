"""The demo: the Gradio app (the only Gradio import in the workbench) and its background server."""
