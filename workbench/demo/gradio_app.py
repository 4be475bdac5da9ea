"""The Gradio UI of the demo: image, webcam and video tabs, the model card, an API.

    from workbench.demo.detector import DetectorDemo, ModelSource
    from workbench.demo.gradio_app import build_demo, launch
    demo = build_demo(DetectorDemo(ModelSource("latest")))
    launch(demo, port=7860)                       # what `workbench demo` runs

The only module of the workbench that imports Gradio. ``gr.Blocks`` is built from the plain
methods of ``DetectorDemo`` (``workbench.demo.detector``), each wrapped by ``GradioHandlers``
so that a ``DemoError`` becomes Gradio's message box, and every event has an ``api_name``,
so the same demo is an API for ``gradio_client`` (``docs/demo.md``):

==================  =======================================================================
``/detect_image``   image path, score threshold, IoU threshold -> annotated image, table,
                    annotated JPEG file, JSON file, status line
``/detect_webcam``  a webcam frame (streaming), thresholds -> annotated frame
``/detect_video``   video path, thresholds, frame step -> annotated WebM video, status line
``/model_card``     -> banner, model card (Markdown), model card (JSON)
``/onnx_file``      -> the served model as an ``.onnx`` file (exported on demand for a run)
==================  =======================================================================
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np

from workbench.demo.detector import DemoError, DemoLimits, DetectorDemo, sample_examples

TABLE_HEADERS = ["#", "class", "score", "x1", "y1", "x2", "y2"]


@contextmanager
def gradio_errors() -> Iterator[None]:
    """Show a ``DemoError`` as Gradio's message box (its title and text) instead of a crash."""
    try:
        yield
    except DemoError as e:
        raise gr.Error(str(e), title=e.title) from e


class GradioHandlers:
    """``DetectorDemo``'s events as Gradio calls them: same parameters (they name the API's
    inputs), ``DemoError`` shown as a message, the video's progress drawn by ``gr.Progress``."""

    def __init__(self, app: DetectorDemo) -> None:
        self.app = app

    def detect_image(
        self, image_path: str | None, score_threshold: float = 0.25, iou_threshold: float = 0.5
    ) -> tuple[str, list[list[Any]], str, str, str]:
        with gradio_errors():
            return self.app.detect_image(image_path, score_threshold, iou_threshold)

    def detect_frame(
        self, frame: np.ndarray | None, score_threshold: float = 0.25, iou_threshold: float = 0.5
    ) -> np.ndarray | None:
        with gradio_errors():
            return self.app.detect_frame(frame, score_threshold, iou_threshold)

    def detect_video(
        self,
        video_path: str | None,
        score_threshold: float = 0.25,
        iou_threshold: float = 0.5,
        frame_step: int = 1,
        progress: gr.Progress = gr.Progress(),
    ) -> tuple[str, str]:
        def on_frame(done: int, total: int | None) -> None:
            if done == 0:
                progress(0, desc="Detecting", total=total, unit="frames")
            else:
                progress((done, total), desc="Detecting", unit="frames")

        with gradio_errors():
            return self.app.detect_video(video_path, score_threshold, iou_threshold, frame_step, on_frame=on_frame)

    def model_card(self) -> tuple[str, str, dict[str, Any]]:
        return self.app.model_card()

    def onnx_file(self) -> str:
        with gradio_errors():
            return self.app.onnx_file()


def build_demo(app: DetectorDemo) -> gr.Blocks:
    """The ``gr.Blocks`` of the demo; queue settings from ``app.limits``."""
    limits = app.limits
    handlers = GradioHandlers(app)
    with gr.Blocks(title="Detection workbench demo", analytics_enabled=False, delete_cache=(3600, 3600)) as demo:
        gr.Markdown("## Detection workbench: try the model")
        banner = gr.Markdown()
        with gr.Tab("Image"):
            with gr.Row():
                with gr.Column():
                    image_in = gr.Image(
                        label="Image", type="filepath", image_mode=None, sources=["upload", "clipboard"], height=420
                    )
                    score = gr.Slider(0.0, 1.0, value=0.25, step=0.01, label="Confidence threshold")
                    iou = gr.Slider(0.05, 1.0, value=0.5, step=0.01, label="IoU threshold (NMS)")
                    run_image = gr.Button("Detect", variant="primary")
                    examples = sample_examples()
                    if examples:
                        gr.Examples(examples=examples, inputs=[image_in], label="Examples (bundled facemask sample)")
                with gr.Column():
                    image_out = gr.Image(label="Detections", type="filepath", height=420, interactive=False)
                    image_status = gr.Markdown()
                    with gr.Row():
                        picture_file = gr.DownloadButton("Annotated image (JPEG)", size="sm")
                        json_file = gr.DownloadButton("Detections (JSON)", size="sm")
            table = gr.Dataframe(headers=TABLE_HEADERS, label="Detections", interactive=False, max_height=320)
            run_image.click(
                handlers.detect_image,
                inputs=[image_in, score, iou],
                outputs=[image_out, table, picture_file, json_file, image_status],
                api_name="detect_image",
            )
        with gr.Tab("Webcam"):
            gr.Markdown(
                f"Start the camera; frames go to the model while it records (up to {limits.stream_seconds} s a "
                "stream). Each frame waits for the one before it, so the rate is what this machine can do."
            )
            with gr.Row():
                cam = gr.Image(label="Webcam", sources=["webcam"], streaming=True, type="numpy")
                cam_out = gr.Image(label="Detections", type="numpy", format="jpeg", interactive=False)
            with gr.Row():
                cam_score = gr.Slider(0.0, 1.0, value=0.4, step=0.01, label="Confidence threshold")
                cam_iou = gr.Slider(0.05, 1.0, value=0.5, step=0.01, label="IoU threshold (NMS)")
            cam.stream(
                handlers.detect_frame,
                inputs=[cam, cam_score, cam_iou],
                outputs=[cam_out],
                api_name="detect_webcam",
                stream_every=0.25,
                time_limit=limits.stream_seconds,
                trigger_mode="always_last",
                show_progress="hidden",
                concurrency_limit=limits.concurrency,
                concurrency_id="webcam",
            )
        with gr.Tab("Video"):
            with gr.Row():
                with gr.Column():
                    video_in = gr.Video(label="Video", sources=["upload"], include_audio=True)
                    v_score = gr.Slider(0.0, 1.0, value=0.25, step=0.01, label="Confidence threshold")
                    v_iou = gr.Slider(0.05, 1.0, value=0.5, step=0.01, label="IoU threshold (NMS)")
                    v_step = gr.Slider(1, 10, value=1, step=1, label="Run the model on every n-th frame")
                    run_video = gr.Button("Detect", variant="primary")
                with gr.Column():
                    video_out = gr.Video(label="Detections (WebM)", interactive=False)
                    video_status = gr.Markdown()
            run_video.click(
                handlers.detect_video,
                inputs=[video_in, v_score, v_iou, v_step],
                outputs=[video_out, video_status],
                api_name="detect_video",
                concurrency_limit=1,  # a video holds the model for many frames; one at a time
                concurrency_id="video",
            )
        with gr.Tab("Model"):
            card_md = gr.Markdown()
            with gr.Accordion("model_card.json", open=False):
                card_json = gr.JSON()
            with gr.Row():
                refresh = gr.Button("Reload", size="sm")
                export = gr.Button("Export ONNX", size="sm")
            onnx_out = gr.File(label="ONNX model (onnxruntime, any image size)", interactive=False)
        refresh.click(handlers.model_card, outputs=[banner, card_md, card_json], api_name="model_card", queue=False)
        export.click(
            handlers.onnx_file, outputs=[onnx_out], api_name="onnx_file", concurrency_limit=1, concurrency_id="export"
        )
        demo.load(handlers.model_card, outputs=[banner, card_md, card_json], api_name="model_card_on_load", queue=False)
    demo.queue(default_concurrency_limit=limits.concurrency, max_size=limits.queue_size)
    return demo


def share_failure_reason(timeout: float = 3.0) -> str:
    """Why Gradio could not open a share link, as far as can be told from here."""
    from gradio import tunneling

    host = "api.gradio.app"
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            pass
    except OSError as e:
        return f"cannot reach {host}:443 ({e.strerror or e}); is this machine offline or behind a proxy?"
    if not Path(tunneling.BINARY_PATH).exists():
        return f"the tunnel client is missing ({tunneling.BINARY_PATH}) and could not be downloaded"
    return "the share server refused the tunnel (see Gradio's message above)"


@dataclass
class Served:
    """Where a launched demo answers: ``local_url`` always, ``share_url`` when a public link was made."""

    local_url: str
    share_url: str | None
    share_error: str | None


def launch(
    demo: gr.Blocks,
    *,
    host: str = "127.0.0.1",
    port: int = 7860,
    share: bool = False,
    auth: tuple[str, str] | None = None,
    limits: DemoLimits | None = None,
    quiet: bool = False,
) -> Served:
    """Start the server without blocking (``demo.block_thread()`` waits; ``demo.close()`` stops).

    A failed share link is not an error: the demo keeps serving on ``host:port`` and
    ``Served.share_error`` says why.
    """
    limits = limits or DemoLimits()
    demo.launch(
        server_name=host,
        server_port=port,
        share=share,
        auth=auth,
        auth_message="Log in with the user and password given to `workbench demo --auth`." if auth else None,
        max_file_size=limits.max_file_size,
        prevent_thread_lock=True,
        show_error=True,
        quiet=quiet,
        footer_links=["api", "settings"],
    )
    share_url = getattr(demo, "share_url", None) if share else None
    error = share_failure_reason() if share and not share_url else None
    return Served(local_url=demo.local_url, share_url=share_url, share_error=error)
