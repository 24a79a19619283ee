"""Read template.yaml so tests and the local demo create resources exactly as it declares them."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from layercache_dev.kit.paths import TEMPLATE_PATH


class _CfnLoader(yaml.SafeLoader):
    """A YAML loader that keeps CloudFormation's short-form tags (!Ref, !Sub...) as data."""


def _construct_tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    name = "Ref" if suffix == "Ref" else f"Fn::{suffix}"
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        assert isinstance(node, yaml.MappingNode)
        value = loader.construct_mapping(node, deep=True)
    if name == "Fn::GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {name: value}


_CfnLoader.add_multi_constructor("!", _construct_tag)


@cache
def load_template(path: Path = TEMPLATE_PATH) -> dict[str, Any]:
    with path.open() as handle:
        template: dict[str, Any] = yaml.load(handle, Loader=_CfnLoader)  # noqa: S506 - safe loader subclass
    return template


def resource(logical_id: str) -> dict[str, Any]:
    """The template's resource `logical_id` (its Type, Properties, ...)."""
    resources: dict[str, Any] = load_template()["Resources"]
    return dict(resources[logical_id])


def create_table_arguments(logical_id: str, table_name: str) -> dict[str, Any]:
    """Arguments for DynamoDB CreateTable that reproduce the template's table."""
    props = resource(logical_id)["Properties"]
    arguments: dict[str, Any] = {
        "TableName": table_name,
        "KeySchema": props["KeySchema"],
        "AttributeDefinitions": props["AttributeDefinitions"],
        "BillingMode": props.get("BillingMode", "PROVISIONED"),
    }
    if "GlobalSecondaryIndexes" in props:
        arguments["GlobalSecondaryIndexes"] = props["GlobalSecondaryIndexes"]
    return arguments


def function_handler(logical_id: str) -> str:
    """The `Handler` of a function in the template, e.g. 'layercache.handlers.x.handler'."""
    handler: str = resource(logical_id)["Properties"]["Handler"]
    return handler


def function_environment(logical_id: str) -> dict[str, Any]:
    """Globals' environment merged with the function's own, values as the template has them."""
    template = load_template()
    merged: dict[str, Any] = dict(
        template.get("Globals", {}).get("Function", {}).get("Environment", {}).get("Variables", {})
    )
    own = resource(logical_id)["Properties"].get("Environment", {}).get("Variables", {})
    merged.update(own)
    return merged


def condition_holds(name: str, refs: dict[str, Any]) -> bool:
    """Evaluate one of the template's Conditions with the parameter values in `refs`."""
    return bool(_evaluate(load_template()["Conditions"][name], refs))


def _evaluate(expression: Any, refs: dict[str, Any]) -> Any:
    if isinstance(expression, dict) and len(expression) == 1:
        ((name, argument),) = expression.items()
        if name in ("Condition", "Fn::Condition"):
            return condition_holds(argument, refs)
        if name == "Fn::Equals":
            left, right = (_evaluate(part, refs) for part in argument)
            return left == right
        if name == "Fn::Not":
            return not _evaluate(argument[0], refs)
        if name == "Fn::And":
            return all(_evaluate(part, refs) for part in argument)
        if name == "Fn::Or":
            return any(_evaluate(part, refs) for part in argument)
        if name == "Fn::Join":
            return resolve(expression, refs)
    return resolve(expression, refs)


# What `{"Ref": "AWS::NoValue"}` resolves to: dropped from the list or map that holds it.
NO_VALUE = object()


def resolve(value: Any, refs: dict[str, Any]) -> Any:
    """Evaluate the intrinsic functions the template's values use (Ref, GetAtt, Join, Sub,
    Split, Select, If on the template's Conditions, AWS::NoValue), in lists and maps too.

    `refs` maps logical ids and parameter names to their values ("Name.Attr" for GetAtt).
    """
    if (
        isinstance(value, dict)
        and len(value) == 1
        and next(iter(value)).startswith(("Ref", "Fn::"))
    ):
        ((name, argument),) = value.items()
        if name == "Ref":
            return NO_VALUE if argument == "AWS::NoValue" else refs[argument]
        if name == "Fn::GetAtt":
            return refs[".".join(argument)]
        if name == "Fn::Join":
            separator, parts = argument
            return separator.join(str(resolve(part, refs)) for part in resolve(parts, refs))
        if name == "Fn::If":
            condition, when_true, when_false = argument
            return resolve(when_true if condition_holds(condition, refs) else when_false, refs)
        if name == "Fn::Sub":
            text, names = (argument, {}) if isinstance(argument, str) else argument
            variables = {**refs, **{key: resolve(val, refs) for key, val in names.items()}}
            return re.sub(r"\$\{([^}]+)\}", lambda m: str(variables[m.group(1)]), text)
        if name == "Fn::Split":
            separator, text = argument
            return str(resolve(text, refs)).split(separator)
        if name == "Fn::Select":
            index, items = argument
            return resolve(items, refs)[int(index)]
        raise ValueError(f"the kit cannot resolve {name}")
    if isinstance(value, list):
        resolved = [resolve(item, refs) for item in value]
        return [item for item in resolved if item is not NO_VALUE]
    if isinstance(value, dict):
        pairs = {key: resolve(item, refs) for key, item in value.items()}
        return {key: item for key, item in pairs.items() if item is not NO_VALUE}
    return value


def parameter_defaults() -> dict[str, Any]:
    """Each template parameter's default (CommaDelimitedList defaults split into lists)."""
    values: dict[str, Any] = {}
    for name, spec in load_template()["Parameters"].items():
        if "Default" not in spec:
            continue
        default = spec["Default"]
        if spec["Type"] == "CommaDelimitedList":
            default = [part.strip() for part in str(default).split(",")]
        values[name] = default if isinstance(default, list) else str(default)
    return values
