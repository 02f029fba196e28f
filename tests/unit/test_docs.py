"""The documentation says what the code does: the configuration page covers every key of the
schema and of every shipped option, and is exactly what its generator prints; every key says
what it means; the README stays a guide whose links lead somewhere."""

import dataclasses
import re
import typing
from pathlib import Path

import yaml

from convbench.config.compose import config_dir
from convbench.config.reference import OPEN_GROUPS, markdown
from convbench.config.schema import Config

REPO = Path(__file__).resolve().parents[2]
PAGE = REPO / "docs" / "configuration.md"


def leaf_keys(schema=Config, prefix: str = "") -> list[tuple[str, dataclasses.Field]]:
    """Every key of the schema, walked here independently of the page's generator."""
    found = []
    hints = typing.get_type_hints(schema)
    for item in dataclasses.fields(schema):
        found.append((f"{prefix}{item.name}", item))
        hint = hints[item.name]
        for block in (hint, *typing.get_args(hint)):  # nested, or optional (tune: null)
            if dataclasses.is_dataclass(block):
                found += leaf_keys(block, f"{prefix}{item.name}.")
    return found


def test_the_configuration_page_is_what_its_generator_prints():
    assert PAGE.read_text() == markdown(), (
        "docs/configuration.md is stale: run "
        "`python -m convbench.config.reference > docs/configuration.md`"
    )


def test_every_schema_key_has_a_meaning_and_a_row():
    page = PAGE.read_text()
    for key, item in leaf_keys():
        assert item.metadata.get("help"), f"{key} says nothing of what it means"
        assert f"| `{key}` |" in page, f"{key} is missing from docs/configuration.md"


def test_every_key_of_every_shipped_option_has_a_row_with_a_meaning():
    page = PAGE.read_text()
    for group in OPEN_GROUPS:
        for path in sorted((config_dir() / group).glob("*.yaml")):
            keys = [k for k in (yaml.safe_load(path.read_text()) or {}) if k != "defaults"]
            for key in keys:
                row = re.search(
                    rf"^\| `{group}\.{re.escape(key)}` \|.*\| (?P<note>[^|]*) \|$",
                    page.split(f"### `{group}={path.stem}`")[1],
                    re.M,
                )
                assert row and row["note"].strip(), f"{path.name}: {key} has no meaning"


def test_the_readme_is_a_guide_whose_links_lead_somewhere():
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) <= 300
    assert readme.index("## Quickstart") < readme.index("## ", readme.index("## Quickstart") + 1)
    targets = re.findall(r"\]\(((?!https?:)[^)#]+)", readme)
    assert targets, "the README links into docs/"
    for target in targets:
        assert (REPO / target).exists(), f"README links to {target}, which does not exist"
