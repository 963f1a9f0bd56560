"""The JSON Schema and the Markdown reference come from the same declarations that validate."""

from __future__ import annotations

from pathlib import Path

import jsonschema
import yaml

from remediator import docgen

REPO = Path(__file__).resolve().parent.parent


def test_configuration_reference_is_up_to_date() -> None:
    current = (REPO / "docs" / "configuration.md").read_text()
    assert current == docgen.markdown(), "docs/configuration.md is stale: run `make docs`"


def test_reference_documents_every_option_of_every_action() -> None:
    text = docgen.markdown()
    for needle in ("### `scale_workers`", "`memory_reserve`", "### `status_rate`", "`min_sample`"):
        assert needle in text


def test_json_schema_accepts_the_shipped_example() -> None:
    config_schema = docgen.json_schema("config")
    jsonschema.Draft7Validator.check_schema(config_schema)
    jsonschema.validate(
        yaml.safe_load((REPO / "config" / "remediator.yaml").read_text()), config_schema
    )
    playbook_schema = docgen.json_schema("playbook")
    jsonschema.Draft7Validator.check_schema(playbook_schema)
    files = sorted((REPO / "config" / "playbooks.d").glob("*.yaml"))
    assert files
    for f in files:
        jsonschema.validate(yaml.safe_load(f.read_text()), playbook_schema)


def test_json_schema_rejects_an_unknown_action_and_an_unknown_key() -> None:
    schema = docgen.json_schema("playbook")
    validator = jsonschema.Draft7Validator(schema)
    good = {"name": "x", "when": {"probe_failing": "site"}, "steps": [{"restart": "php-fpm"}]}
    assert validator.is_valid(good)
    assert not validator.is_valid({**good, "steps": [{"restrat": "php-fpm"}]})
    assert not validator.is_valid({**good, "colour": "blue"})
    assert not validator.is_valid({**good, "when": {"probe_failing": "site", "any": []}})
