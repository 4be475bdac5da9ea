"""What the format modules share: the image index."""

from __future__ import annotations

from workbench.datasets import index
from workbench.formats.common import ImageIndex


def test_image_index_from_a_scan_matches_the_formats_own(tmp_path):
    for rel in [
        "b/img10.jpg",
        "b/img2.jpg",
        "a.png",
        "a/x/1.png",
        "a/2.png",
        "B/c.jpg",
        ".hidden/z.jpg",
        "a/notes.txt",
    ]:
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    ours = ImageIndex.from_scan(tmp_path, index.scan(tmp_path))
    theirs = ImageIndex(tmp_path)
    assert ours.paths == theirs.paths
    assert ours.by_name == theirs.by_name and ours.by_stem == theirs.by_stem and ours.known == theirs.known
