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
    """A real four-job sweep: MLP and LeNet, two seeds each, two epochs."""
    folder = tmp_path_factory.mktemp("browser") / "outputs"
    finish(
        start(
            "train",
            "-m",
            "model=mlp,lenet",
            "seed=0,1",
            *tiny_mnist_overrides(mnist_root),
            ONE_THREAD,
            f"hydra.sweep.dir={folder / 'sweep'}",
            cwd=folder.parent,
        )
    )
    return folder


def _cells(rows, column: int) -> list[str]:
    return [rows.nth(i).locator("td").nth(column).inner_text() for i in range(rows.count())]


def test_the_report_names_the_best_and_by_how_much(sweep, tmp_path):
    page_file = tmp_path / "report.html"
    finish(start("compare", str(sweep), "--html", str(page_file), cwd=tmp_path))
    with browser_page() as page:
        page.goto(page_file.as_uri())
        assert page.title().startswith("convbench compare")
        headers = page.locator("#groups thead th").all_inner_texts()
        assert headers[1:3] == ["model", "n"]
        difference = next(i for i, h in enumerate(headers) if h.startswith("difference from"))
        measure = next(i for i, h in enumerate(headers) if h.startswith("test_acc"))
        rows = page.locator("#groups tbody tr")
        assert rows.count() == 2
        assert sorted(_cells(rows, 1)) == ["lenet", "mlp"]
        assert _cells(rows, 2) == ["2", "2"], "two seeds a group"
        means = [float(cell.split(" ± ")[0]) for cell in _cells(rows, measure)]
        assert means == sorted(means, reverse=True), "sorted by the measure, best first"
        assert _cells(rows, 0) == ["★ best", ""]
        assert "best" in rows.first.get_attribute("class")
        weight = rows.first.locator("td").first.evaluate("td => getComputedStyle(td).fontWeight")
        assert int(weight) >= 600, "the best row stands out"
        best_delta, other_delta = _cells(rows, difference)
        assert best_delta == "-"
        delta, error = other_delta.split(" ± ")
        assert float(delta) == pytest.approx(means[1] - means[0], abs=2e-4) and float(error) >= 0
        shared = dict(
            (row.locator("td").nth(0).inner_text(), row.locator("td").nth(1).inner_text())
            for row in page.locator("#shared tr").all()
        )
        assert shared["dataset.val_size"] == "100" and shared["trainer.epochs"] == "2"
        assert "model" not in shared and "seed" not in shared, "they differ"
        assert "spread" in page.locator("p.note").inner_text() or "standard deviation" in (
            page.locator("p.note").inner_text()
        )
        links = page.locator("#runs a")
        assert links.count() == 4
        href = links.first.get_attribute("href")
        assert (page_file.parent / href / ".hydra" / "config.yaml").is_file(), href
        figure = page.locator("img")
        size = figure.evaluate("image => [image.complete, image.naturalWidth, image.naturalHeight]")
        assert size[0] and size[1] >= 800 and size[2] > 300, "the figure decoded and shows"
        assert figure.bounding_box()["width"] > 700, "and it is laid out at a readable size"


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
        jobs = ("0_model=mlp,seed=0", "1_model=mlp,seed=1", "2_model=lenet,seed=0")
        with browser_page() as page:
            page.goto(url + "#scalars&tagFilter=val%2Facc")
            for job in jobs:
                page.get_by_text(f"sweep/{job}", exact=True).first.wait_for(timeout=60_000)
            tag = page.get_by_text("tag: val/acc", exact=True)
            card = page.locator("tf-scalar-card").filter(has=tag)
            assert card.count() == 1
            # Each run's line joins its two epochs' points: an SVG path with a line segment.
            card.locator("path.line[d*='L']").nth(1).wait_for(state="attached", timeout=60_000)
            page.goto(url + "#hparams")
            table = page.locator("#sessionGroupsTable")
            table.get_by_text("lenet", exact=True).first.wait_for(timeout=60_000)
            assert table.get_by_text("mlp", exact=True).count() == 2, "the config's name"
            for job in jobs:  # whole in the table (its column is 10em wide, resizable)
                assert table.get_by_text(f"sweep/{job}", exact=True).count() == 1, job
            headers = [
                " ".join(h.split()) for h in table.locator(".table-header").all_inner_texts()
            ]
            shown = [h for h in headers if h not in ("Trial ID", "Show Metrics", "")]
            assert shown[:2] == ["model", "seed"], f"the swept keys lead: {headers}"
            for key in ("dataset.train_limit", "dataset.val_size", "dataset.augment.crop_padding"):
                assert page.get_by_text(key, exact=True).count() >= 1, f"{key} is logged"
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_a_studys_report_shows_its_search_pictures(mnist_root, tmp_path):
    """`convbench compare STUDY_DIR --html`: under the comparison, Optuna's pictures of the
    search (history, importances, slice, contour), each decoded at a readable size."""
    study = tmp_path / "study"
    finish(
        start(
            "tune",
            "tune=lenet_sgd",
            *tiny_mnist_overrides(mnist_root),
            ONE_THREAD,
            "trainer.epochs=1",
            "trainer.log_images=false",
            "tune.n_trials=4",
            "tune.pruner=none",
            f"tune.dir={study}",
            cwd=tmp_path,
        )
    )
    page_file = tmp_path / "study.html"
    finish(start("compare", str(study), "--html", str(page_file), cwd=tmp_path))
    with browser_page() as page:
        page.goto(page_file.as_uri())
        assert page.locator("#groups tbody tr").count() == 4, "one row a trial"
        captions = page.locator("#study figcaption").all_inner_texts()
        for word in ("optimisation history", "importances", "slice", "contour"):
            assert any(word in caption for caption in captions), (word, captions)
        for image in page.locator("#study img").all():
            complete, width, height = image.evaluate(
                "i => [i.complete, i.naturalWidth, i.naturalHeight]"
            )
            assert complete and width >= 800 and height >= 300, "decoded, 900 px wide"
            assert image.bounding_box()["width"] > 700
