"""What a person sees in a real browser (headless Chromium): the compare page of a real sweep,
and TensorBoard through `convbench tb` on the same runs: the run names, the table, the plotted
figure, the val/acc chart and the HParams table."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.browser import browser_page
from helpers.cli import ONE_THREAD, cli_env, finish, start, tiny_mnist_overrides


@pytest.fixture(scope="module")
def sweep(mnist_root, tmp_path_factory) -> Path:
    """A real two-job sweep (MLP and LeNet, two epochs each)."""
    folder = tmp_path_factory.mktemp("browser") / "outputs"
    finish(
        start(
            "train",
            "-m",
            "model=mlp,lenet",
            *tiny_mnist_overrides(mnist_root),
            ONE_THREAD,
            f"hydra.sweep.dir={folder / 'sweep'}",
            cwd=folder.parent,
        )
    )
    return folder


def test_the_compare_page_shows_the_runs_table_and_figure(sweep, tmp_path):
    page_file = tmp_path / "report.html"
    finish(start("compare", str(sweep), "--html", str(page_file), cwd=tmp_path))
    with browser_page() as page:
        page.goto(page_file.as_uri())
        assert page.title().startswith("convbench compare")
        rows = page.locator("table tbody tr")
        assert rows.count() == 2
        models = sorted(rows.nth(i).locator("td").first.inner_text() for i in range(2))
        assert models == ["lenet", "mlp"]
        headers = page.locator("table thead th").all_inner_texts()
        assert headers[:3] == ["model", "n", "test acc"]
        figure = page.locator("img")
        size = figure.evaluate("image => [image.complete, image.naturalWidth, image.naturalHeight]")
        assert size[0] and size[1] > 500 and size[2] > 300, "the figure decoded and shows"
        assert figure.bounding_box()["width"] > 500, "and it is laid out at a readable size"


def test_tensorboard_shows_the_runs_the_val_acc_chart_and_hparams(sweep):
    server = subprocess.Popen(
        [sys.executable, "-m", "convbench", "tb", str(sweep), "--port", "0"],
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        url = None
        for line in server.stdout:
            found = re.search(r"(http://127\.0\.0\.1:\d+/)", line)
            if found:
                url = found[1]
                break
        assert url, "convbench tb printed no URL"
        with browser_page() as page:
            page.goto(url + "#scalars&tagFilter=val%2Facc")
            for job in ("0_model=mlp", "1_model=lenet"):
                page.get_by_text(f"sweep/{job}", exact=True).first.wait_for(timeout=60_000)
            tag = page.get_by_text("tag: val/acc", exact=True)
            card = page.locator("tf-scalar-card").filter(has=tag)
            assert card.count() == 1
            # Each run's line joins its two epochs' points: an SVG path with a line segment.
            card.locator("path.line[d*='L']").nth(1).wait_for(state="attached", timeout=60_000)
            page.goto(url + "#hparams")
            table = page.locator("#sessionGroupsTable")
            table.get_by_text("LeNet", exact=True).wait_for(timeout=60_000)
            assert table.get_by_text("MLP", exact=True).count() == 1
            assert table.get_by_text("sweep/0_model=mlp").count() == 1
    finally:
        server.terminate()
        server.wait(timeout=30)
